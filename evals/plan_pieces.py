"""The plan executor's per-instance pieces, computed with the agents' own steps for a batch of instances.

- e_sem per alpha: `CloudAgent.semantic_embeddings` (CDA4Rec Eq. 2), then e_sem . e_i for every item as the
  cloud's exact index scores it (one matrix-vector product per instance, float32); alphas that give the same
  e_sem (no query) share one vector;
- e_str . e_i per encoder: the rows of the evaluation set's full score matrices (`evals.rec.structured_scores`,
  the trained device encoders, Eq. 4 then Eq. 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from agents.cloud.agent import CloudAgent
from evals.rec import EvalSet
from tools.plan_executor import InstancePieces, PlanExecutor
from tools.protocol import Abstract


def executor_for(evalset: EvalSet, catalog) -> PlanExecutor:
    """The executor over the catalogue's tag groups."""
    return PlanExecutor({tag: catalog.tag_members(tag) for tag in catalog.tags()}, evalset.num_items)


def instance_pieces(evalset: EvalSet, rows: np.ndarray, abstracts: Sequence[Abstract], cloud: CloudAgent,
                    item_table: np.ndarray, alphas: Sequence[float]) -> list[InstancePieces]:  # fmt: skip
    """Pieces of the instances at `rows` (with their abstracts, in the same order) for these alphas."""
    table = np.asarray(item_table, dtype=np.float32)
    per_alpha = {alpha: cloud.semantic_embeddings(abstracts, [alpha] * len(abstracts)) for alpha in alphas}
    out = []
    for n, row in enumerate(rows.tolist()):
        inst = evalset.instances[row]
        semantic: dict[float, np.ndarray] = {}
        by_vector: dict[bytes, np.ndarray] = {}
        for alpha in alphas:
            vector = per_alpha[alpha][n]
            key = vector.tobytes()
            if key not in by_vector:
                by_vector[key] = table @ np.asarray(vector, dtype=np.float32).reshape(-1)
            semantic[alpha] = by_vector[key]
        structured = {name: matrix[row] for name, matrix in evalset.structured.items()}
        more = partial(_scores_at, cloud, abstracts[n], table)
        out.append(InstancePieces(semantic, structured, np.asarray(inst.history, dtype=np.int64), int(inst.target),
                                  more))  # fmt: skip
    return out


def _scores_at(cloud: CloudAgent, abstract: Abstract, table: np.ndarray, alpha: float) -> np.ndarray:
    """e_sem . e_i for one abstract at any alpha, by the cloud's own Eq. 2."""
    return table @ cloud.semantic_embeddings([abstract], [alpha])[0]

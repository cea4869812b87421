"""The plan executor's per-instance pieces, computed with the agents' own steps for a batch of instances.

- e_sem per alpha: `CloudAgent.semantic_embeddings` (CDA4Rec Eq. 2); the pieces score every item from it in
  float64 (`tools.exact_scores`, the scores the cloud's exact index cuts its tag groups on); alphas
  that give the same e_sem (no query) share one score vector;
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
                    alphas: Sequence[float]) -> list[InstancePieces]:  # fmt: skip
    """Pieces of the instances at `rows` (with their abstracts, in the same order) for these alphas; each scored
    against the item table of the cloud's side that answers its abstract (`CloudAgent.side`)."""
    per_alpha = {alpha: cloud.semantic_embeddings(abstracts, [alpha] * len(abstracts)) for alpha in alphas}
    out = []
    for n, row in enumerate(rows.tolist()):
        inst = evalset.instances[row]
        vectors = {alpha: np.asarray(per_alpha[alpha][n], dtype=np.float32).reshape(-1) for alpha in alphas}
        structured = {name: matrix[row] for name, matrix in evalset.structured.items()}
        more = partial(_embedding_at, cloud, abstracts[n])
        table = np.asarray(cloud.side(abstracts[n]).space.table, dtype=np.float32)
        out.append(InstancePieces(vectors, table, structured, np.asarray(inst.masked, dtype=np.int64),
                                  int(inst.target), more))  # fmt: skip
    return out


def _embedding_at(cloud: CloudAgent, abstract: Abstract, alpha: float) -> np.ndarray:
    """e_sem for one abstract at any alpha, by the cloud's own Eq. 2."""
    return cloud.semantic_embeddings([abstract], [alpha])[0]

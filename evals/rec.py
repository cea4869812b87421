"""`tandem eval rec`: recommendation accuracy of Tandem and its baselines (CDA4Rec Tables II, IV, V).

Protocol, stated in every table: leave-one-out, the target ranked against ALL items (full ranking), the
user's history masked for every method (Tandem never recommends a seen item, so the baselines get the same
courtesy), HR@5/10 and NDCG@5/10. Rows:
- popularity, SASRec alone, SURGE alone: full ranking by the trained device encoders (CDA4Rec Eq. 4, 6);
- semantic alone: full ranking by e_sem . e_i with alpha = 0.5 (Eq. 2), no tags, no encoder;
- LSC4Rec-style static pipeline: no planning, the cloud's top 1,000 by e_sem (alpha 0.5) over the whole
  catalog, reranked on the device by SASRec with min-max fusion, beta 0.5 (LSC4Rec Eq. 9-10);
- leak controls, in every table that has a query (they get exactly the information Tandem gets):
  "SASRec + query tags" ranks items carrying more of the tags the query names (parsed from the abstract by
  the rule planner's own `signals_from_abstract`) ahead, SASRec order within; "semantic + SASRec fixed
  fusion" fuses e_sem (fixed alpha) over the whole catalog with SASRec at a fixed beta, no planner;
- Tandem: per-user plan (rule planner for every user; language-model planner on a seeded sample), tag-group
  retrieval (Eq. 3), the plan's encoder, fusion with the plan's beta (Eq. 5-7), and LSC4Rec's re-request
  (Eq. 11-12) for the `load` share of most inconsistent users;
- ablations: v1-v7 of CDA4Rec Table IV (fixed settings; the 20 or 3 tags the rule planner prefers for that
  user), and "w/o AG" (the planner reads the raw query, the raw recent titles and the facts computed from
  the raw history instead of the abstract, so only the abstract is removed).
Tandem's rank of the target is its position in the list the device would show; a target outside the
candidates is a miss. The cloud and device steps are the agents' own (`CloudAgent.semantic_batch`,
`DeviceAgent.rank`), the ones the graph runs; retrieval is exact inner product over the tag groups
(`ExactTagIndex`), which the Chroma HNSW index of the graph matches at recall@N 0.99995
(evals/results/index_ml-1m.json). Every table says which planner produced its numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch

from agents.cloud.agent import CloudAgent, SemanticAnswer
from agents.device.agent import DeviceAgent
from evals.rec_plans import PlannedCase, instance_key
from tools.data import Catalog, EvalInstance
from tools.metrics import metrics_from_ranks, per_user, seen_mask, target_ranks
from tools.protocol import Abstract, Plan
from tools.rule_planner import rule_tags, signals_from_abstract

BUCKETS: dict[str, tuple[int, int]] = {"short (<10)": (0, 10), "medium (10-50)": (10, 51), "long (>50)": (51, 10**9)}
STATIC_CANDIDATES = 1000  # the LSC4Rec-style pipeline's fixed candidate list
FIXED_ALPHA = 0.5  # "semantic + SASRec fixed fusion": query and summary weigh alike (Eq. 2)
FIXED_BETA = 0.3  # ... and the semantic weight the rule planner uses for a query with a dense history (Eq. 5)
TAG_BASELINE = "SASRec + query tags"
FUSION_BASELINE = "semantic + SASRec fixed fusion"


@dataclass
class RowResult:
    """One method's ranks over a set of instances, with what it cost."""

    name: str
    planner: str
    ranks: np.ndarray
    ms_per_request: float
    cloud_calls: float = 0.0
    notes: str = ""

    def per_user(self, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
        return per_user(self.ranks if rows is None else self.ranks[rows], metric)

    def metrics(self, rows: np.ndarray | None = None) -> dict[str, float]:
        return metrics_from_ranks(self.ranks if rows is None else self.ranks[rows])

    def as_row(self, rows: np.ndarray | None = None) -> dict:
        users = len(self.ranks) if rows is None else int(rows.sum() if rows.dtype == bool else len(rows))
        return {"method": self.name, "planner": self.planner, "users": users, **self.metrics(rows),
                "ms_per_request": self.ms_per_request, "cloud_calls_per_request": self.cloud_calls,
                "notes": self.notes}  # fmt: skip


@dataclass
class EvalSet:
    """Instances with everything the device computes once for them: encoder score matrices, seen masks."""

    instances: list[EvalInstance]
    num_items: int
    structured: dict[str, np.ndarray] = field(default_factory=dict)  # encoder -> [N, V + 1]
    encode_ms: dict[str, float] = field(default_factory=dict)  # encoder -> per-user share of batched encoding

    def with_instances(self, instances: list[EvalInstance]) -> EvalSet:
        """The same users (same order, same encoder scores) with other instances, e.g. other queries."""
        if [i.user for i in instances] != [i.user for i in self.instances]:
            raise ValueError("with_instances needs the same users in the same order")
        return EvalSet(list(instances), self.num_items, self.structured, self.encode_ms)

    def miss_rank(self) -> int:
        return self.num_items + 1

    def subset(self, keys: set[str]) -> np.ndarray:
        """Row positions of the instances whose key is in `keys`."""
        return np.array([n for n, inst in enumerate(self.instances) if instance_key(inst) in keys], dtype=np.int64)

    def bucket_rows(self) -> dict[str, np.ndarray]:
        lengths = np.array([len(inst.history) for inst in self.instances])
        return {name: (lengths >= low) & (lengths < high) for name, (low, high) in BUCKETS.items()}


def structured_scores(encoder, instances: Sequence[EvalInstance], batch_size: int = 256) -> tuple[np.ndarray, float]:
    """Full score matrix [N, V + 1] of a device encoder (Eq. 4 then Eq. 6) and the ms per user it took."""
    order = np.argsort([len(inst.history) for inst in instances], kind="stable")
    out = None
    start = time.perf_counter()
    with torch.no_grad():
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            scores = encoder.score_histories([instances[i].history for i in rows]).numpy()
            if out is None:
                out = np.zeros((len(instances), scores.shape[1]), dtype=np.float32)
            out[rows] = scores
    return out, (time.perf_counter() - start) * 1000.0 / max(1, len(instances))


def full_ranking_ranks(scores: np.ndarray, instances: Sequence[EvalInstance]) -> np.ndarray:
    """0-based rank of each target against all items, every item the user saw before it masked (ties count
    against)."""
    mask = seen_mask([inst.masked for inst in instances], scores.shape[1])
    return target_ranks(torch.from_numpy(scores), torch.from_numpy(_targets(instances)), mask).numpy()


def _targets(instances: Sequence[EvalInstance]) -> np.ndarray:
    return np.array([inst.target for inst in instances], dtype=np.int64)


# ------------------------------------------------------------------------------------------ the pipeline


@dataclass
class PipelineRun:
    """Ranks, LSC4Rec inconsistencies and per-request device/cloud milliseconds of one pipeline pass."""

    ranks: np.ndarray
    inconsistency: np.ndarray
    ms: np.ndarray


def static_answers(
    cloud: CloudAgent, abstracts: list[Abstract], size: int = STATIC_CANDIDATES, alpha: float = 0.5
) -> list[SemanticAnswer]:
    """LSC4Rec-style cloud: e_sem with a fixed alpha, then the top `size` items of the whole catalog (no tags)."""
    return cloud.top_answers(abstracts, alpha, size)


def rank_instances(
    evalset: EvalSet, rows: np.ndarray, plans: list[Plan], answers: list[SemanticAnswer], device: DeviceAgent,
    cloud_ms: float = 0.0,
) -> PipelineRun:
    """The device's rank step (the graph's, `DeviceAgent.rank`) for the instances at `rows`, scored on the target.

    `answers` are the cloud's Eq. 2-3 answers for the same instances; the structured scores come from the
    precomputed full score matrices of the plan's encoder (Eq. 4 then Eq. 6).
    """
    ranks = np.full(len(rows), evalset.miss_rank(), dtype=np.int64)
    incons = np.zeros(len(rows))
    ms = np.zeros(len(rows))
    for n, (row, plan, answer) in enumerate(zip(rows.tolist(), plans, answers, strict=True)):
        inst = evalset.instances[row]
        begin = time.perf_counter()
        use_encoder = plan.uses_encoder and len(inst.history) > 0
        structured = partial(_matrix_scores, evalset.structured[plan.encoder], row) if use_encoder else None
        ranking = device.rank(answer.candidates, answer.scores, plan.beta, inst.masked, structured)
        position = ranking.position(inst.target)
        if position is not None:
            ranks[n] = position
        incons[n] = ranking.inconsistency
        encode = evalset.encode_ms.get(plan.encoder, 0.0) if use_encoder else 0.0
        ms[n] = (time.perf_counter() - begin) * 1000.0 + cloud_ms + encode
    return PipelineRun(ranks, incons, ms)


def _matrix_scores(matrix: np.ndarray, row: int, candidates: np.ndarray) -> np.ndarray:
    return matrix[row, candidates]


# ------------------------------------------------------------------------------------- leak controls


def lexicographic_beta(named: int) -> float:
    """A beta for which the rank step orders by the semantic score first and the structured one within.

    With integer semantic scores spanning r <= `named` levels, min-max (LSC4Rec Eq. 9) puts one level at
    beta / r and the whole structured range at 1 - beta; beta = (m + 0.5) / (m + 1) makes beta / m > 1 - beta,
    so one more tag always outranks any SASRec difference (CDA4Rec Eq. 5-7 used as a sort key).
    """
    return (named + 0.5) / (named + 1.0)


def tag_count_scores(tags: Sequence[str], catalog: Catalog) -> np.ndarray:
    """How many of `tags` each item carries [V + 1]."""
    counts = np.zeros(catalog.num_items + 1, dtype=np.float64)
    for tag in tags:
        counts[catalog.tag_members(tag)] += 1.0
    return counts


def query_tag_ranks(evalset: EvalSet, abstracts: list[Abstract], catalog: Catalog, device: DeviceAgent,
                    encoder: str = "SASRec") -> tuple[np.ndarray, float]:  # fmt: skip
    """"SASRec + query tags": over the whole catalog, items carrying more of the query's tags first, SASRec
    order within, through the one rank step. The tags are what the rule planner reads from the same abstract
    (`signals_from_abstract`). Returns the ranks and the share of queries that named at least one tag."""
    known = catalog.tags()
    items = np.arange(1, catalog.num_items + 1, dtype=np.int64)
    ranks = np.full(len(evalset.instances), evalset.miss_rank(), dtype=np.int64)
    named = 0
    for row, (inst, abstract) in enumerate(zip(evalset.instances, abstracts, strict=True)):
        tags = signals_from_abstract(abstract, known).query_tags
        named += bool(tags)
        structured = partial(_matrix_scores, evalset.structured[encoder], row)
        ranking = device.rank(items, tag_count_scores(tags, catalog)[items], lexicographic_beta(len(tags)),
                              inst.masked, structured)  # fmt: skip
        position = ranking.position(inst.target)
        if position is not None:
            ranks[row] = position
    return ranks, named / max(1, len(evalset.instances))


def fixed_fusion_ranks(evalset: EvalSet, abstracts: list[Abstract], cloud: CloudAgent, device: DeviceAgent,
                       encoder: str = "SASRec") -> np.ndarray:  # fmt: skip
    """"semantic + SASRec fixed fusion": e_sem (Eq. 2, alpha `FIXED_ALPHA`) scored over the whole catalog,
    fused on the device with SASRec at beta `FIXED_BETA` (Eq. 5-7), no planner, no tags."""
    answers = static_answers(cloud, abstracts, evalset.num_items, FIXED_ALPHA)
    known = cloud.known_tags()  # the plan only carries alpha, encoder and beta here: its tags are not used
    plans = [fixed_plan(a, known, alpha=FIXED_ALPHA, size=500, tag_count=3, encoder=encoder, beta=FIXED_BETA,
                        label="fixed fusion") for a in abstracts]  # fmt: skip
    return rank_instances(evalset, np.arange(len(evalset.instances)), plans, answers, device).ranks


def run_pipeline(
    evalset: EvalSet, rows: np.ndarray, abstracts: list[Abstract], plans: list[Plan], cloud: CloudAgent,
    device: DeviceAgent,
) -> PipelineRun:
    """Tandem for the instances at `rows`: the cloud's Eq. 2-3 (`CloudAgent.semantic_batch`), the device's rank."""
    start = time.perf_counter()
    answers = cloud.semantic_batch(abstracts, plans)
    cloud_ms = (time.perf_counter() - start) * 1000.0 / max(1, len(rows))
    return rank_instances(evalset, rows, plans, answers, device, cloud_ms)


def fixed_plan(abstract: Abstract, known_tags: list[str], *, alpha: float, size: int, tag_count: int,
               encoder: str, beta: float, label: str) -> Plan:  # fmt: skip
    """A CDA4Rec Table IV setting for this user: fixed numbers, the tags the rule planner prefers."""
    signals = signals_from_abstract(abstract, known_tags)
    tags = rule_tags(signals, known_tags, tag_count, size)
    why = f"fixed setting {label}"
    return Plan(alpha=alpha, tag_count=tag_count, candidate_size=size, tags=tags, encoder=encoder, beta=beta,
                explanations={"semantic": why, "retrieval": why, "structured": why, "ranking": why})  # fmt: skip


ABLATIONS: dict[str, dict] = {  # CDA4Rec Table IV
    "v1": {"alpha": 0.5, "size": 5000, "tag_count": 20, "encoder": "SASRec", "beta": 0.5},
    "v2": {"alpha": 1.0, "size": 5000, "tag_count": 20, "encoder": "SASRec", "beta": 0.5},
    "v3": {"alpha": 0.0, "size": 5000, "tag_count": 20, "encoder": "SASRec", "beta": 0.5},
    "v4": {"alpha": 0.5, "size": 500, "tag_count": 3, "encoder": "SASRec", "beta": 0.5},
    "v5": {"alpha": 0.5, "size": 5000, "tag_count": 20, "encoder": "SURGE", "beta": 0.5},
    "v6": {"alpha": 0.5, "size": 5000, "tag_count": 20, "encoder": "SASRec", "beta": 1.0},
    "v7": {"alpha": 0.5, "size": 5000, "tag_count": 20, "encoder": "SASRec", "beta": 0.0},
}


def fire_at_load(inconsistency: np.ndarray, load: float) -> np.ndarray:
    """LSC4Rec Eq. 12 at a target load: the `load` share with the highest Eq. 11 score re-request.

    Equivalent to a threshold at the (1 - load) quantile of these instances' own inconsistencies (as
    `tools.fusion.threshold_for_load` sets it from a sample of users), with ties broken by order so that
    exactly round(load * n) instances fire even when many scores are equal.
    """
    fired = np.zeros(len(inconsistency), dtype=bool)
    count = int(round(min(max(load, 0.0), 1.0) * len(inconsistency)))
    fired[np.argsort(-np.asarray(inconsistency), kind="stable")[:count]] = True
    return fired


def planned(cases: dict[str, PlannedCase], evalset: EvalSet, rows: np.ndarray) -> tuple[list[Abstract], list[Plan]]:
    """The cached abstracts and plans of the instances at `rows`, in row order."""
    picked = [cases[instance_key(evalset.instances[r])] for r in rows.tolist()]
    return [Abstract.model_validate(c.abstract) for c in picked], [Plan.model_validate(c.plan) for c in picked]


def planning_ms(cases: dict[str, PlannedCase], evalset: EvalSet, rows: np.ndarray) -> np.ndarray:
    """Measured abstract + plan milliseconds of the instances at `rows`."""
    picked = [cases[instance_key(evalset.instances[r])] for r in rows.tolist()]
    return np.array([(c.abstract_s + c.plan_s) * 1000.0 for c in picked])

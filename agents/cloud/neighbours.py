"""The learned planner without a language model: the plan that served the nearest labelled abstracts best.

Hindsight labels (`tandem plans label`, `evals.hindsight`) score every point of the discretised plan space
(`tools.plan_space`) for every labelled validation user against that user's validation item. For a new
abstract this planner finds the k labelled abstracts nearest to it (cosine similarity of the abstracts'
retrieval texts, `retrieval_text`, in the cloud's own text space, CDA4Rec Eq. 1's encoder + PCA) and picks the
point with the best mean reward over them (`neighbour_choice`, the same rule the labels' targets were derived
and validated with), then makes it a plan for this abstract (`PlanPoint.plan_for`: the rule planner's tags and weights).
The reward is NDCG@10 of the validation item; ties (most points score 0 for most users) are broken by the
untruncated NDCG, so a plan that ranks the item 11th beats one that misses it. No test item is ever read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.cloud.semantic import TextSpace
from ground.errors import TandemError
from tools.plan_space import PlanPoint
from tools.protocol import Abstract, PlanResult

RETRIEVAL_TEXT = "facts"  # what neighbours are found by (`retrieval_text`); plan caches that retrieve are keyed by it
TIE_BREAK = 1e-6  # weight of the untruncated NDCG in the selection score (below any NDCG@10 difference)


class ExemplarsMissingError(TandemError):
    """No hindsight labels for this data set yet."""


def retrieval_text(abstract: Abstract) -> str:
    """The part of an abstract that neighbours are found by: the query and the computed facts sentence, not the
    SLM's prose clause before the facts. The labelled abstracts are rule-built (facts only), so an SLM-written
    abstract is compared with them on what both carry; a prose clause (often naming tags the history does not
    lean to) would otherwise pull in neighbours by wording. Without a facts sentence, the whole summary."""
    facts = abstract.facts
    behaviour = facts.to_text() if facts is not None else abstract.behavior_summary
    return f"Query: {abstract.sanitized_query or '(none)'}. Behavior: {behaviour}"


def abstract_vectors(abstracts: Sequence[Abstract], space: TextSpace) -> np.ndarray:
    """The abstracts' retrieval texts as unit vectors [N, d] in the cloud's text space (what nearest neighbours
    are taken in)."""
    vectors = space.project([retrieval_text(a) for a in abstracts]).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def selection_scores(ranks: np.ndarray, miss: int) -> np.ndarray:
    """Reward of each rank for choosing plans: NDCG@10, ties broken by the untruncated NDCG (a miss scores 0)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    gain = np.where(ranks < miss, 1.0 / np.log2(ranks + 2.0), 0.0)
    return (np.where(ranks < 10, gain, 0.0) + TIE_BREAK * gain).astype(np.float32)


def neighbour_choice(scores: np.ndarray, neighbours: np.ndarray) -> int:
    """The point with the best mean selection score over these neighbours' rows (first point on a tie)."""
    return int(np.argmax(scores[neighbours].mean(axis=0)))


@dataclass(frozen=True)
class NeighbourPlanner:
    """k nearest labelled abstracts -> the plan space point with their best mean hindsight reward."""

    vectors: np.ndarray  # [M, d] unit vectors of the labelled abstracts
    scores: np.ndarray  # [M, P] selection scores of every point for every labelled abstract
    points: tuple[PlanPoint, ...]
    k: int
    source: str  # the labels' file and key, named on every plan

    @classmethod
    def load(cls, path: Path) -> NeighbourPlanner:
        """The planner from an exemplars file written by `tandem plans label`."""
        if not Path(path).is_file():
            raise ExemplarsMissingError(f"no hindsight labels at {path}: run `tandem plans label`")
        with np.load(path, allow_pickle=False) as data:
            points = tuple(PlanPoint(float(a), int(t), int(n), str(e), float(b)) for a, t, n, e, b in
                           zip(data["alpha"], data["tag_count"], data["size"], data["encoder"], data["beta"],
                               strict=True))  # fmt: skip
            return cls(data["vectors"], data["scores"], points, int(data["k"]), f"hindsight-{data['key']}-k{data['k']}")

    def neighbours(self, vector: np.ndarray) -> np.ndarray:
        """The rows of the k labelled abstracts nearest one abstract vector (in no particular order)."""
        similarity = self.vectors @ np.asarray(vector, dtype=np.float32)
        k = min(self.k, len(similarity))
        return np.argpartition(-similarity, k - 1)[:k]

    def choose(self, vector: np.ndarray) -> tuple[PlanPoint, float]:
        """The point for one abstract vector, and its mean reward over the neighbours."""
        return self.ranked(vector, 1)[0]

    def ranked(self, vector: np.ndarray, count: int) -> list[tuple[PlanPoint, float]]:
        """The `count` points with the best mean selection score over this abstract's neighbours, best first
        (ties in point order, as `neighbour_choice` breaks them), each with that mean."""
        means = self.scores[self.neighbours(vector)].mean(axis=0)
        order = np.argsort(-means, kind="stable")[:count]
        return [(self.points[i], float(means[i])) for i in order.tolist()]

    def plan(self, abstract: Abstract, known_tags: Sequence[str], space: TextSpace) -> PlanResult:
        """CDA4Rec III-C without a language model: the hindsight-best plan of the nearest labelled abstracts."""
        point, reward = self.choose(abstract_vectors([abstract], space)[0])
        why = f"{self.k} nearest labelled abstracts: best mean validation NDCG@10 {reward:.3f} ({point.label})"
        return PlanResult(plan=point.plan_for(abstract, known_tags, why[:500]), status="learned",
                          prompt=f"neighbours:{self.source}")  # fmt: skip

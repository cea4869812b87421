"""Device-side ranking and the device<->cloud request decision.

- `minmax` is LSC4Rec Eq. 9; `fuse_scores` is LSC4Rec Eq. 10 and, with beta as the weight, CDA4Rec Eq. 5-6
  applied at score level. Why at score level: the semantic embedding e_sem lives in the PCA'd text space of
  Eq. 1, while the device encoder trains its own copy of the item table, so e_sem . e_i and e_str . e_i are
  dot products with two different tables. Min-max normalising each (Eq. 9) before the beta-weighted sum
  puts them on one scale; when both tables coincide this ranks like Eq. 5-6 up to the normalisation.
- `rank_step` is the device's whole rank step: mask seen (and, for a constrained request, disallowed) items,
  fuse (Eq. 5-6), pull towards the conversation's seed items, order (CDA4Rec Eq. 7), and score the
  disagreement with the cloud (Eq. 11).
- `inconsistency` is LSC4Rec Eq. 11, `should_request` Eq. 12, and `threshold_for_load` sets the threshold
  from a target cloud load, as the paper does: sort the inconsistency of a sample of users and cut at the
  (1 - load) quantile, so that about `load` of requests go back to the cloud.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def minmax(scores: np.ndarray) -> np.ndarray:
    """LSC4Rec Eq. 9: (p - min p) / (max p - min p); a constant vector maps to zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return scores
    low, high = scores.min(), scores.max()
    return np.zeros_like(scores) if high - low < 1e-12 else (scores - low) / (high - low)


def fuse_scores(semantic: np.ndarray, structured: np.ndarray | None, beta: float) -> np.ndarray:
    """CDA4Rec Eq. 5-6 at score level (LSC4Rec Eq. 10): beta * norm(sem) + (1 - beta) * norm(str)."""
    if structured is None or beta >= 1.0:
        return minmax(semantic)
    return beta * minmax(semantic) + (1.0 - beta) * minmax(structured)


def inconsistency(initial: Sequence[int], reranked: Sequence[int]) -> float:
    """LSC4Rec Eq. 11: mean |pos_init(u) - pos_rerank(u)| over the items both lists share.

    Divided by the number of shared items n (as in the paper) and, so that lists of different lengths are
    comparable, by n once more: 0 = same order, about 1/3 = unrelated orders, 0.5 = reversed.
    """
    position = {item: pos for pos, item in enumerate(initial)}
    shared = [(position[item], pos) for pos, item in enumerate(reranked) if item in position]
    n = len(shared)
    if n < 2:
        return 0.0
    shifts = [abs(a - b) for a, b in shared]
    return float(sum(shifts) / n / n)


def should_request(score: float, threshold: float) -> bool:
    """LSC4Rec Eq. 12: Request = 1(c >= threshold)."""
    return score >= threshold


def threshold_for_load(scores: Sequence[float], load: float) -> float:
    """The threshold under which a fraction (1 - load) of the sampled inconsistencies fall."""
    if not 0.0 < load <= 1.0:
        raise ValueError(f"cloud load must be in (0, 1], got {load}")
    if not len(scores):
        return float("inf")
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - load))


StructuredScores = Callable[[np.ndarray], np.ndarray]
"""Candidate ids [C] -> the device encoder's e_str . e_i for each (CDA4Rec Eq. 4 then Eq. 6)."""

SeedScores = Callable[[np.ndarray], np.ndarray]
"""Candidate ids [C] -> similarity of each candidate to the conversation's seed items (liked or referenced)."""

SEED_WEIGHT = 0.3
"""Weight of the seed-similarity term in the rank step: final = (1 - w) * fused + w * minmax(seed similarity).

Not one of the papers' terms: it carries a chat's "more like that one" into the one rank step. 0.3 keeps the
fused Eq. 5-6 score in charge (a seed re-orders the candidates the plan retrieved; it cannot pull in items
the plan did not) while moving the seed's nearest candidates into the top ten. Set by hand, not tuned on
any split; requests without seeds rank exactly as before."""


@dataclass(frozen=True)
class Ranking:
    """The device's order of the cloud candidates (seen items removed), with the fused scores."""

    items: np.ndarray  # [C'] candidate ids, best first
    scores: np.ndarray  # [C'] fused scores (CDA4Rec Eq. 5-6 at score level), same order
    inconsistency: float  # LSC4Rec Eq. 11 between the cloud's order and this one

    def position(self, item_id: int) -> int | None:
        """0-based position of `item_id` in the order, None when it is not a candidate."""
        hit = np.flatnonzero(self.items == item_id)
        return int(hit[0]) if len(hit) else None


def rank_step(
    candidates: np.ndarray,
    semantic: np.ndarray,
    beta: float,
    seen: np.ndarray | Sequence[int],
    structured: StructuredScores | None = None,
    *,
    allowed: np.ndarray | None = None,
    seeds: SeedScores | None = None,
    seed_weight: float = SEED_WEIGHT,
    disagreement: bool = True,
) -> Ranking:
    """The device's one rank step: CDA4Rec Eq. 5-7 with LSC4Rec Eq. 9-11.

    1. mask seen: a candidate the user already interacted with is never recommended; with `allowed` (booleans
       indexed by item id, [V + 1]) a candidate the request rules out (an excluded tag, outside its years)
       is never recommended either;
    2. fuse: beta * minmax(e_sem . e_i) + (1 - beta) * minmax(e_str . e_i) (`fuse_scores`); without structured
       scores (no encoder, or no history to encode) the semantic scores alone decide (beta = 1);
    3. seeds (a chat's liked or referenced items): (1 - w) * fused + w * minmax(seed similarity), w =
       `SEED_WEIGHT`; without seeds nothing changes;
    4. order by the score, ties by smaller id (Eq. 7);
    5. score the disagreement with the cloud's order (Eq. 11) for LSC4Rec's re-request decision; with
       `disagreement=False` this step is skipped and `inconsistency` is NaN (for callers that only read the order,
       such as the plan executor scoring a whole plan space: Eq. 11 is a Python loop that costs more than steps 1-4).
    The graph, the evaluations, the plan executor and the re-request threshold sample all rank through this function.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    keep = ~np.isin(candidates, np.asarray(seen, dtype=np.int64))
    if allowed is not None:
        inside = (candidates >= 0) & (candidates < len(allowed))
        keep &= inside & np.asarray(allowed, dtype=bool)[np.where(inside, candidates, 0)]
    candidates, semantic = candidates[keep], np.asarray(semantic, dtype=np.float64)[keep]
    scores = structured(candidates) if structured is not None else None
    fused = fuse_scores(semantic, scores, beta if scores is not None else 1.0)
    if seeds is not None and len(candidates):
        fused = (1.0 - seed_weight) * fused + seed_weight * minmax(seeds(candidates))
    device_order = np.lexsort((candidates, -fused))
    if not disagreement:
        return Ranking(candidates[device_order], fused[device_order], float("nan"))
    cloud_order = np.lexsort((candidates, -semantic))
    score = inconsistency(candidates[cloud_order].tolist(), candidates[device_order].tolist())
    return Ranking(candidates[device_order], fused[device_order], score)

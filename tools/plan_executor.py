"""The plan executor: the target's rank under any plan, from pieces computed once per instance.

What a plan changes in a request is cheap once the expensive parts are cached per instance:
- e_sem . e_i for every item, one vector per alpha (CDA4Rec Eq. 2, scored as the cloud's exact index does);
- each tag group's items ordered by that score, so Eq. 3's top-N_i of a tag is a prefix of its order;
- e_str . e_i for every item, one vector per encoder (Eq. 4 then Eq. 6).
A plan then costs a union of prefixes and one call of the rank step (`tools.fusion.rank_step`, Eq. 5-7), the
same function the graph and `tandem eval rec` rank with; only Eq. 11 (the re-request score, which no rank
depends on) is skipped. A plan whose candidates miss the target is a miss without ranking, and a candidate
list met before (many plans retrieve the same items) is ranked once per encoder and beta. The history is
removed from a candidate list once, when it is retrieved, rather than by each of the rank step's calls on it
(the rank step's own mask would remove nothing more; the 1,500 or so calls per user made that mask a third of
the cost).
`tests/test_plan_executor.py` checks the ranks against `evals.rec.run_pipeline` (the cloud's
`semantic_batch` and the device's `DeviceAgent.rank`) for the same plans and users.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from tools.exact_scores import exact_scores
from tools.fusion import rank_step
from tools.plan_space import PlanPoint
from tools.protocol import Plan, effective_beta
from tools.tag_index import fill_shares


@dataclass
class InstancePieces:
    """One instance's cached pieces: e_sem and its scores per alpha, structured scores per encoder, history, target."""

    vectors: dict[float, np.ndarray]  # alpha -> e_sem [d] (CDA4Rec Eq. 2)
    table: np.ndarray  # [V + 1, d] the item semantic table of Eq. 1 (shared, float32)
    structured: dict[str, np.ndarray]  # encoder -> e_str . e_i [V + 1]
    seen: np.ndarray  # every item seen before the target (`EvalInstance.masked`; masked by the rank step)
    target: int
    more: Callable[[float], np.ndarray] | None = None  # e_sem for an alpha that is not cached
    semantic: dict[float, np.ndarray] = field(default_factory=dict, repr=False)  # alpha -> e_sem . e_i [V + 1], f64
    _orders: dict[tuple[int, str], np.ndarray] = field(default_factory=dict, repr=False)

    def vector(self, alpha: float) -> np.ndarray:
        """e_sem at this alpha: cached, or computed once by `more` (a plan outside the grid)."""
        if alpha not in self.vectors:
            if self.more is None:
                raise KeyError(f"no semantic embedding for alpha {alpha:g} (cached: {sorted(self.vectors)})")
            self.vectors[alpha] = np.asarray(self.more(alpha), dtype=np.float32).reshape(-1)
        return self.vectors[alpha]

    def scores(self, alpha: float) -> np.ndarray:
        """e_sem . e_i [V + 1] at this alpha in float64, as the cloud's exact index cuts its tag groups; alphas with
        the same e_sem (no query) share one array (and so one set of tag orders)."""
        if alpha not in self.semantic:
            vector = self.vector(alpha)
            same = next((a for a, v in self.vectors.items() if a in self.semantic and np.array_equal(v, vector)), None)
            everything = np.arange(len(self.table))
            self.semantic[alpha] = exact_scores(self.table, everything, vector) if same is None else self.semantic[same]
        return self.semantic[alpha]

    def exact(self, alpha: float, ids: np.ndarray) -> np.ndarray:
        """e_sem . e_i of the chosen items, by the expression the cloud's exact index answers with."""
        return exact_scores(self.table, ids, self.vector(alpha))


def _row_scores(row: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    return row[candidates]


class PlanExecutor:
    """Ranks an instance's target under plans, from `InstancePieces` (CDA4Rec Eq. 3 from cached orders, Eq. 5-7
    through the one rank step)."""

    def __init__(self, tag_members: Mapping[str, np.ndarray], num_items: int) -> None:
        self.tag_members = {tag: np.asarray(m, dtype=np.int64) for tag, m in tag_members.items()}
        self.sizes = {tag: len(members) for tag, members in self.tag_members.items()}
        self.miss = num_items + 1  # the rank of a target that is not in the list (as `EvalSet.miss_rank`)

    def _order(self, pieces: InstancePieces, alpha: float, tag: str) -> np.ndarray:
        """The tag group's items, best e_sem . e_i first (ties: lower id first, as `ExactTagIndex`)."""
        scores = pieces.scores(alpha)
        key = (id(scores), tag)  # alphas that share one score vector (no query) share the orders too
        if key not in pieces._orders:
            members = self.tag_members[tag]
            pieces._orders[key] = members[np.lexsort((members, -scores[members]))]
        return pieces._orders[key]

    def candidates(self, pieces: InstancePieces, alpha: float,
                   tags: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """CDA4Rec Eq. 3: the union of each tag's top items (`fill_shares` of N_i, as the indexes retrieve), as ids
        sorted by id [C] and their scores [C]."""
        shares = fill_shares(tags, self.sizes)
        parts = [self._order(pieces, alpha, tag)[:n] for tag, n in shares.items() if n > 0]
        ids = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        return ids, pieces.exact(alpha, ids)

    def _unseen(self, pieces: InstancePieces, ids: np.ndarray, semantic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The candidates without the history (step 1 of the rank step, done once per candidate list)."""
        keep = ~np.isin(ids, pieces.seen)
        return ids[keep], semantic[keep]

    def _rank_candidates(self, pieces: InstancePieces, ids: np.ndarray, semantic: np.ndarray, encoder: str,
                         beta: float) -> int:  # fmt: skip
        """`ids` (sorted, the history already removed) ranked by the one rank step; the target's position."""
        at = np.searchsorted(ids, pieces.target)
        if at >= len(ids) or ids[at] != pieces.target:
            return self.miss
        use_encoder = encoder != "none" and len(pieces.seen) > 0
        structured = partial(_row_scores, pieces.structured[encoder]) if use_encoder else None
        ranking = rank_step(ids, semantic, effective_beta(encoder, beta), (), structured, disagreement=False)
        position = ranking.position(pieces.target)
        return self.miss if position is None else position

    def rank(self, pieces: InstancePieces, plan: Plan) -> int:
        """The target's 0-based position in the list the device would show for `plan` (miss = num_items + 1)."""
        ids, semantic = self._unseen(pieces, *self.candidates(pieces, plan.alpha, plan.tags))
        return self._rank_candidates(pieces, ids, semantic, plan.encoder, plan.beta)

    def rank_points(self, pieces: InstancePieces, points: Sequence[PlanPoint],
                    tags_for: Callable[[int, int], dict[str, int]]) -> np.ndarray:  # fmt: skip
        """The target's rank under every point [P]; `tags_for(tag_count, size)` gives the point's tags for this
        instance (`PlanPoint.plan_for` makes the same). Identical candidate lists are ranked once per encoder/beta."""
        ranks = np.empty(len(points), dtype=np.int32)
        tag_cache: dict[tuple[int, int], dict[str, int]] = {}
        retrieved: dict[tuple[int, int, int], tuple[bytes, np.ndarray, np.ndarray]] = {}
        ranked: dict[tuple[bytes, int, str, float], int] = {}
        for n, point in enumerate(points):
            shape = (point.tag_count, point.candidate_size)
            if shape not in tag_cache:
                tag_cache[shape] = tags_for(*shape)
            where = (id(pieces.scores(point.alpha)), *shape)
            if where not in retrieved:
                ids, semantic = self._unseen(pieces, *self.candidates(pieces, point.alpha, tag_cache[shape]))
                retrieved[where] = (ids.tobytes(), ids, semantic)
            digest, ids, semantic = retrieved[where]
            beta = effective_beta(point.encoder, point.beta)
            key = (digest, id(pieces.scores(point.alpha)), point.encoder, beta)
            if key not in ranked:
                ranked[key] = self._rank_candidates(pieces, ids, semantic, point.encoder, beta)
            ranks[n] = ranked[key]
        return ranks

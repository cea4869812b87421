"""The device trusts nothing from the cloud: every reply is checked against the request it answers.

A reply that parsed into its protocol model can still be wrong for *this* device and *this* request: an
e_sem of another dimension, candidate ids outside the catalogue, fewer scores than candidates, NaN scores,
a plan naming tags the catalogue does not have, a CHORD strategy for other layers. Any of these would crash
the rank step, or worse, be cached and poison every later request of the user (SCaLRec's cache). The checks
live here, once; the boundary applies them to every reply of every transport before anything uses or caches
it, and the device applies them again to what it reads back from its cache.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ground.errors import TandemError
from tools.exact_scores import exact_scores
from tools.protocol import (
    ChordStrategy,
    CompactSemanticResponse,
    PlanResult,
    SemanticRequest,
    SemanticResponse,
    StrategyRequest,
)

CLOUD_STATUSES = frozenset({"parsed", "repaired", "fallback", "rule", "learned"})
"""How a plan may have been obtained *by the cloud* ("cached" and "device" are the device's own)."""


class UntrustedReplyError(TandemError):
    """A cloud reply that does not fit the request it answers (it is neither used nor cached)."""


def _first_not_finite(values: Sequence[float]) -> int | None:
    return next((n for n, v in enumerate(values) if not math.isfinite(v)), None)


@dataclass(frozen=True)
class ReplyChecker:
    """What the device knows to check replies against: its item space, its catalogue and its tags."""

    dim: int
    """Dimension d of the item space (CDA4Rec Eq. 1), so of e_sem (Eq. 2)."""
    num_items: int
    """Catalogue ids run 1..num_items."""
    known_tags: frozenset[str]

    def plan(self, result: PlanResult) -> PlanResult:
        """A plan from the cloud: a status the cloud may give, and only tags of the device's catalogue."""
        if result.status not in CLOUD_STATUSES:
            raise UntrustedReplyError(f"plan status {result.status!r} is not one the cloud gives")
        unknown = sorted(set(result.plan.tags) - self.known_tags)
        if unknown:
            raise UntrustedReplyError(f"plan names tag(s) outside the catalogue, e.g. {unknown[0][:40]!r}")
        numbers = (result.plan.alpha, result.plan.beta)
        if _first_not_finite(numbers) is not None:
            raise UntrustedReplyError("plan weights are not finite")
        return result

    def semantic(self, request: SemanticRequest, reply: SemanticResponse, dim: int | None = None) -> SemanticResponse:
        """CDA4Rec Eq. 2-3 as received: `semantics`, and at most the plan's candidate size."""
        if len(reply.candidates) > request.plan.candidate_size:
            raise UntrustedReplyError(f"{len(reply.candidates)} candidates for a plan of "
                                      f"{request.plan.candidate_size}")  # fmt: skip
        self.semantics(reply.e_sem, reply.candidates, reply.scores, dim)
        return reply

    def semantics(self, e_sem: Sequence[float], candidates: Sequence[int], scores: Sequence[float],
                  dim: int | None = None) -> None:  # fmt: skip
        """e_sem of the item dimension (`dim`, default Eq. 1's) and finite; candidates in the catalogue and
        distinct, each with one finite score. The same checks guard what the device reads back from its cache."""
        dim = self.dim if dim is None else dim
        if len(e_sem) != dim:
            raise UntrustedReplyError(f"e_sem has {len(e_sem)} dimensions; the item space has {dim}")
        if _first_not_finite(e_sem) is not None:
            raise UntrustedReplyError("e_sem holds a value that is not a finite number")
        if len(scores) != len(candidates):
            raise UntrustedReplyError(f"{len(candidates)} candidates but {len(scores)} scores")
        outside = next((c for c in candidates if not 1 <= c <= self.num_items), None)
        if outside is not None:
            raise UntrustedReplyError(f"candidate id {outside} is outside the catalogue (1..{self.num_items})")
        if len(set(candidates)) != len(candidates):
            raise UntrustedReplyError("the candidate list repeats an item")
        bad = _first_not_finite(scores)
        if bad is not None:
            raise UntrustedReplyError(f"candidate score {bad} is not a finite number")

    def strategy(
        self, request: StrategyRequest, reply: ChordStrategy, layers: Sequence[tuple[str, int]]
    ) -> ChordStrategy:
        """CHORD Eq. 12-13 as received: for the encoder asked about, its layers and channels (`layers`, the
        device's own (name, channels) list), 2 bits per channel, a finite tiering beta."""
        if reply.encoder != request.encoder:
            raise UntrustedReplyError(f"strategy is for {reply.encoder[:40]!r}, not {request.encoder!r}")
        if list(zip(reply.layers, reply.channels, strict=False)) != list(layers) or len(reply.layers) != len(layers):
            raise UntrustedReplyError("strategy layers or channel counts differ from the device's encoder")
        try:
            payload = base64.b64decode(reply.codes, validate=True)
        except (binascii.Error, ValueError):
            raise UntrustedReplyError("strategy codes are not base64") from None
        expected = (sum(reply.channels) * 2 + 7) // 8
        if len(payload) != expected:
            raise UntrustedReplyError(f"strategy holds {len(payload)} bytes; {expected} expected")
        if not math.isfinite(reply.beta):
            raise UntrustedReplyError("strategy beta is not a finite number")
        return reply


def expand_compact(reply: CompactSemanticResponse, item_table: np.ndarray) -> SemanticResponse:
    """A wire-2 semantic answer read on the device: e_sem and the candidate set as sent, each candidate's score
    e_sem . e_i (CDA4Rec Eq. 3) recomputed from the device's own item table [V + 1, d], and the cloud's order
    restored (best first, ties by smaller id). The result then passes the same checks as a wire-1 answer."""
    e_sem, ids = reply.decode()
    if len(e_sem) != item_table.shape[1]:
        raise UntrustedReplyError(f"e_sem has {len(e_sem)} dimensions; the item space has {item_table.shape[1]}")
    if len(ids) and (ids[0] < 1 or ids[-1] >= len(item_table)):
        raise UntrustedReplyError(f"a candidate id is outside the catalogue (1..{len(item_table) - 1})")
    scores = exact_scores(item_table, ids, e_sem)  # [C], the very numbers the cloud's exact index cut on
    order = np.lexsort((ids, -scores))
    return SemanticResponse(e_sem=e_sem.tolist(), candidates=ids[order].tolist(), scores=scores[order].tolist())

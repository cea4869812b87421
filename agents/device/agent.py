"""The device agent: everything that happens on the user's device, as one object.

It owns the raw history (SQLite) and everything computed from it: the SCaLRec cache verdict and calibration,
the scrubbed abstract (CDA4Rec III-B), structured user modelling at full or CHORD precision (Eq. 4; CHORD
Eq. 2-6), the one rank step (mask seen, Eq. 5-7, LSC4Rec Eq. 11), and the explanation (III-H). It talks to
no cloud: the graph carries its abstracts and CHORD requests across the boundary and hands it the replies.
The graph's nodes, the evaluations and training call these same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from agents.device.abstract import ABSTRACT_PROMPT, AbstractResult, generate_abstract, history_from_ids
from agents.device.encoders import EncoderShelf, HistoryEncodings
from agents.device.explain import EXPLAIN_PROMPT, Explanation, generate_explanation
from agents.device.replies import ReplyChecker, UntrustedReplyError
from ground.errors import StoreError
from tools.calibration import BEHAVIOUR_POLICY, ReliabilityPolicy, SemanticCalibrator
from tools.chord import strategy_average_bits
from tools.constraints import RequestConstraints, parse_request
from tools.data import Catalog
from tools.device_store import CachedSemantics, DeviceStore, query_key
from tools.fusion import Ranking, SeedScores, StructuredScores, rank_step
from tools.inference_thread import on_inference_thread
from tools.protocol import (
    Abstract,
    ChordStrategy,
    Plan,
    PlanResult,
    SemanticRequest,
    SemanticResponse,
    StrategyRequest,
    UserProfile,
)
from tools.quant import DeviceResources
from tools.rule_planner import rule_plan, signals_from_abstract

RECENT_WINDOW = 20  # interactions behind the fresh abstract of an LSC4Rec re-request (Eq. 12)
SeedSource = Callable[[str], tuple[np.ndarray, np.ndarray] | None]


def _no_seed(user: str) -> None:
    return None


@dataclass(frozen=True)
class LocalHistory:
    """The user's interactions as the device models read them (oldest first), and what was dropped."""

    items: list[int]
    timestamps: list[int]
    warnings: list[str]


class CacheVerdict(BaseModel):
    """SCaLRec: is the cached cloud semantics still reliable for the newest interactions?"""

    present: bool
    reliable: bool = False
    reliability: float | None = None
    new_interactions: int = 0
    reason: str = ""
    warning: str | None = None
    """Set when a cached entry was found unusable and ignored (shown to the user)."""


class Precision(BaseModel):
    """At which precision the device encoder ran for this request (CHORD Eq. 4)."""

    mode: Literal["full", "chord"]
    avg_bits: float
    strategy_avg_bits: float | None = None
    strategy_bits: int | None = None


FULL_PRECISION = Precision(mode="full", avg_bits=32.0)


@dataclass(frozen=True)
class Encoding:
    """e_str of CDA4Rec Eq. 4 and which encoder, at which precision, produced it."""

    encoder: str
    e_str: np.ndarray
    precision: Precision


@dataclass
class DeviceAgent:
    """The device side of Tandem (see the module docstring)."""

    catalog: Catalog
    item_table: np.ndarray  # [V + 1, d] item semantics of Eq. 1, the device's copy for cache checks
    store: DeviceStore
    encoders: EncoderShelf
    seeds: SeedSource = _no_seed
    abstract_model: BaseChatModel | None = None
    explain_model: BaseChatModel | None = None
    abstract_prompt: str = ABSTRACT_PROMPT
    explain_prompt: str = EXPLAIN_PROMPT
    policy: ReliabilityPolicy = field(default_factory=ReliabilityPolicy)  # for e_sem in Eq. 1's space
    behaviour_policy: ReliabilityPolicy = BEHAVIOUR_POLICY  # for e_sem in the encoder's item space
    calibrator: SemanticCalibrator | None = None
    max_seq_len: int = 200
    precision: Literal["full", "chord"] = "full"
    resources: DeviceResources = field(default_factory=lambda: DeviceResources(max_avg_bits=4.0))
    behaviour_table: np.ndarray | None = None  # E_str of the cloud's behaviour side (`tools.encoder_space`), if any
    item_space: str | None = None  # its `TextSpace.table_key` (sent to the cloud, which must hold the same table)
    behaviour_calibrator: SemanticCalibrator | None = None  # SCaLRec's, fitted to the behaviour side's e_sem
    encodings: HistoryEncodings = field(init=False, repr=False)  # e_str per encoder and history, computed once

    def __post_init__(self) -> None:
        self.encodings = HistoryEncodings(self.encoders)

    # -- history -------------------------------------------------------------------------------------------
    def history(
        self, user: str, items: Sequence[int] | None = None, timestamps: Sequence[int] | None = None
    ) -> LocalHistory:
        """The user's history from the store (seeded once from the data set for a known user), or the one given.

        Unknown item ids are dropped with a warning; histories longer than the encoders read are noted.
        """
        warnings = self.store.take_notices()
        if items is not None:
            items, stamps = list(items), list(timestamps) if timestamps is not None else list(range(len(items)))
        else:
            stored, stored_ts = self.store.history(user)
            seed = self.seeds(user) if not len(stored) and not self.store.was_reset(user) else None
            if seed is not None:
                try:
                    self.store.seed_history(user, *seed)
                    stored, stored_ts = self.store.history(user)
                except StoreError as exc:  # the request goes on with the data set's history, unsaved
                    stored, stored_ts = np.asarray(seed[0]), np.asarray(seed[1])
                    warnings.append(f"{exc}; this request used the data set's history without saving it")
            items, stamps = stored.tolist(), stored_ts.tolist()
        if len(items) > self.max_seq_len:
            warnings.append(f"history has {len(items)} interactions; the device models read the newest "
                            f"{self.max_seq_len}")  # fmt: skip
        known = [n for n, item in enumerate(items) if 1 <= item <= self.catalog.num_items]
        if len(known) < len(items):
            first = next(item for item in items if not 1 <= item <= self.catalog.num_items)
            warnings.append(f"dropped {len(items) - len(known)} unknown item id(s) from the history, e.g. {first}")
            items, stamps = [items[n] for n in known], [stamps[n] for n in known]
        return LocalHistory(items, stamps, warnings)

    # -- replies from the cloud (checked before use or caching) -------------------------------------------
    @cached_property
    def replies(self) -> ReplyChecker:
        """The checks every cloud reply passes before the device uses or caches it (`agents.device.replies`)."""
        return ReplyChecker(dim=int(self.item_table.shape[1]), num_items=self.catalog.num_items,
                            known_tags=frozenset(self.catalog.tags()))  # fmt: skip

    def check_plan(self, result: PlanResult) -> PlanResult:
        return self.replies.plan(result)

    def check_semantic(self, request: SemanticRequest, reply: SemanticResponse, space: str = "") -> SemanticResponse:
        return self.replies.semantic(request, reply, int(self.table_for(space).shape[1]))

    # -- the item tables e_sem is scored against ------------------------------------------------------------
    def answer_space(self, abstract: Abstract) -> str:
        """The table the cloud answers this abstract in: the behaviour side's (`item_space`) for an abstract without
        a query when the device holds that table, else "" (Eq. 1's). The cloud applies the same rule
        (`CloudAgent.side`)."""
        return self.item_space if self.item_space and not abstract.sanitized_query.strip() else ""

    def table_for(self, space: str) -> np.ndarray:
        """The item table of `space` ("" = Eq. 1's); UntrustedReplyError for a table this device does not hold."""
        if not space:
            return self.item_table
        if space == self.item_space and self.behaviour_table is not None:
            return self.behaviour_table
        raise UntrustedReplyError(f"e_sem is in item space {space[:80]!r}, which this device does not hold")

    def _calibrator_for(self, space: str) -> SemanticCalibrator | None:
        return self.behaviour_calibrator if space else self.calibrator

    def check_strategy(self, name: str, request: StrategyRequest, reply: ChordStrategy) -> ChordStrategy:
        """A CHORD strategy must fit the layers of the device's own encoder `name`."""
        chord = self.encoders.chord(name)
        if chord is None:
            raise UntrustedReplyError(f"a strategy arrived for {name}, which has no CHORD on this device")
        return self.replies.strategy(request, reply, [(s.name, s.channels) for s in chord.specs])

    # -- SCaLRec cache ----------------------------------------------------------------------------------------
    def cached(self, user: str) -> CachedSemantics | None:
        """The user's cached cloud semantics, or None when there is none or it is unusable (`cache_problem`)."""
        entry = self.store.cached(user)
        return entry if entry is not None and self.cache_problem(entry) is None else None

    def cache_problem(self, entry: CachedSemantics) -> str | None:
        """Why a cached entry cannot be used (it fails the reply checks), or None. A store written before the
        checks existed may hold a poisoned entry: it is ignored, and the next valid cloud answer replaces it."""
        try:
            dim = int(self.table_for(entry.space).shape[1])
            self.replies.semantics(entry.e_sem, entry.candidates, entry.candidate_scores, dim)
            Plan.model_validate(entry.plan, context={"known_tags": self.catalog.tags()})
        except (UntrustedReplyError, ValueError) as exc:
            return str(exc).splitlines()[0]
        return None

    def cache_verdict(self, user: str, query: str, history: Sequence[int]) -> CacheVerdict:
        """SCaLRec reliability of the cached cloud semantics against the interactions made since."""
        entry = self.store.cached(user)
        if entry is None:
            return CacheVerdict(present=False)
        problem = self.cache_problem(entry)
        if problem is not None:
            return CacheVerdict(present=False, reason="unusable cache",
                                warning=f"ignored the cached cloud semantics: {problem}")  # fmt: skip
        if entry.query_key != query_key(query):
            return CacheVerdict(present=True, reason="new query")
        e_sem = np.asarray(entry.e_sem, np.float32)
        policy = self.behaviour_policy if entry.space else self.policy
        verdict = policy.judge(e_sem, self._new_items(entry, history), self.table_for(entry.space))
        return CacheVerdict(present=True, reliable=verdict.reliable, reliability=verdict.reliability,
                            new_interactions=verdict.new_interactions)  # fmt: skip

    @staticmethod
    def _new_items(entry: CachedSemantics, history: Sequence[int]) -> np.ndarray:
        newer = history[entry.history_len :] if entry.history_len <= len(history) else history
        return np.asarray(newer, dtype=np.int64)

    def cached_candidates(self, entry: CachedSemantics, e_sem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cached candidates, scored by `e_sem` (the cached embedding or its calibration), Eq. 3's score."""
        candidates = np.asarray(entry.candidates, dtype=np.int64)
        table = self.table_for(entry.space)
        return candidates, (table[candidates] @ np.asarray(e_sem, np.float32)).astype(np.float64)

    def calibrate(self, entry: CachedSemantics, history: Sequence[int]) -> tuple[np.ndarray, int]:
        """SCaLRec on-device calibration of the cached e_sem with the newer interactions; (e_cal, how many)."""
        new_items = self._new_items(entry, history)
        e_sem = np.asarray(entry.e_sem, np.float32)
        calibrator = self._calibrator_for(entry.space)
        if calibrator is None:
            return e_sem, len(new_items)
        return calibrator.calibrate(e_sem, new_items, self.table_for(entry.space)), len(new_items)

    def remember(self, user: str, query: str, history_len: int, e_sem: Sequence[float], candidates: Sequence[int],
                 scores: Sequence[float], plan: Plan, space: str = "") -> list[str]:  # fmt: skip
        """Cache the cloud's semantic answer for SCaLRec's next reliability check: only one that passes the reply
        checks (a bad answer would poison every later request of the user). Warnings when it was not saved (the
        answer itself stands: a cache that could not be written only costs a later cloud call)."""
        self.replies.semantics(e_sem, candidates, scores, int(self.table_for(space).shape[1]))
        try:
            self.store.store(user, CachedSemantics(e_sem=list(e_sem), candidates=list(candidates),
                                                   candidate_scores=list(scores), history_len=history_len,
                                                   plan=plan.model_dump(), query_key=query_key(query),
                                                   space=space))  # fmt: skip
        except StoreError as exc:
            return [f"{exc}; the answer is shown but not cached"]
        return []

    # -- abstract (CDA4Rec III-B) -----------------------------------------------------------------------------
    def abstract(self, query: str, items: Sequence[int], timestamps: Sequence[int], *,
                 recent_only: bool = False, use_model: bool = True) -> AbstractResult:  # fmt: skip
        """The scrubbed abstract; `recent_only` builds an LSC4Rec re-request's from the newest interactions.

        `use_model=False` writes it from the rules alone (scrubbed query + computed facts), without the SLM.
        """
        if recent_only:
            items, timestamps = list(items)[-RECENT_WINDOW:], list(timestamps)[-RECENT_WINDOW:]
        entries, unknown = history_from_ids(items, timestamps, self.catalog)
        model = self.abstract_model if use_model else None
        return generate_abstract(query, entries, model, known_tags=self.catalog.tags(), unknown_ids=unknown,
                                 prompt=self.abstract_prompt)  # fmt: skip

    def local_plan(self, abstract: Abstract) -> PlanResult:
        """The plan the device makes on its own when the cloud is unreachable: the rules, SASRec alone."""
        plan = rule_plan(signals_from_abstract(abstract, self.catalog.tags()), self.catalog.tags())
        return PlanResult(plan=plan.model_copy(update={"encoder": "SASRec", "beta": 0.0}), status="device")

    # -- structured user modelling (CDA4Rec Eq. 4, CHORD) -----------------------------------------------------
    def resolve_encoder(self, name: str) -> tuple[str, list[str]]:
        """The encoder the device runs for a plan's choice: SASRec stands in for an untrained SURGE."""
        if name != "SASRec" and not self.encoders.available(name):
            return "SASRec", [f"no {name} checkpoint on the device: SASRec encoded the history instead"]
        return name, []

    def chord_request(self, name: str, history: Sequence[int]) -> tuple[StrategyRequest | None, list[str]]:
        """CHORD Eq. 6: the profile z the device sends up instead of its history (None at full precision)."""
        if self.precision != "chord":
            return None, []
        chord = self.encoders.chord(name)
        if chord is None:
            return None, [f"no CHORD trained for {name}: full precision (tandem train --chord)"]
        z = chord.profile([np.asarray(history, dtype=np.int64)])[0]
        return StrategyRequest(encoder=chord.encoder_name, profile=UserProfile(z=z.tolist())), []

    def encode(self, name: str, history: Sequence[int], strategy: ChordStrategy | None = None) -> Encoding:
        """CDA4Rec Eq. 4: e_str of the history, at full precision or quantized to CHORD's strategy (Eq. 2-4)."""
        if strategy is None:
            return Encoding(name, self.encodings.get(name, history), FULL_PRECISION)
        return on_inference_thread(self._encode_quantized, name, history, strategy)

    def _encode_quantized(self, name: str, history: Sequence[int], strategy: ChordStrategy) -> Encoding:
        model, bits = self.encoders.quantized(name, strategy, self.resources)
        chord = self.encoders.chord(name)
        precision = Precision(mode="chord", avg_bits=bits, strategy_bits=strategy.payload_bits,
                              strategy_avg_bits=strategy_average_bits(strategy, chord.specs))  # fmt: skip
        e_str = model.encode([np.asarray(history, dtype=np.int64)])[0].numpy()
        return Encoding(name, e_str, precision)

    def structured_scores(self, name: str, e_str: Sequence[float]) -> StructuredScores:
        """CDA4Rec Eq. 6 for candidates: ids [C] -> e_str . e_i with the encoder's item table."""
        encoder = self.encoders.get(name)
        user = torch.tensor(np.asarray([e_str], dtype=np.float32))

        def on_thread(candidates: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return encoder.candidate_scores(user, torch.from_numpy(candidates))[0].numpy()

        return lambda candidates: on_inference_thread(on_thread, candidates)

    # -- request constraints (tools.constraints) --------------------------------------------------------------
    def constraints(self, query: str) -> RequestConstraints:
        """The request in the catalogue's terms: excluded tags, year range, parts naming people or plots."""
        return parse_request(query, self.catalog.tags())

    def constrain_plan(self, plan: Plan, constraints: RequestConstraints,
                       history: Sequence[int]) -> tuple[Plan, list[str]]:  # fmt: skip
        """Swap the tags a request rules out (excluded, or a decade outside its years) out of a plan, before
        retrieval; each replacement keeps the N_i of the tag it replaces. Replacements, in order: decades inside
        the year range, the tags the request names, the history's most frequent tags, the catalogue's order."""
        ruled_out = constraints.rules_out
        ranged = constraints.year_from is not None or constraints.year_to is not None

        def decade(tag: str) -> int | None:
            return int(tag[:4]) if len(tag) == 5 and tag[:4].isdigit() and tag.endswith("s") else None

        bad = [tag for tag in plan.tags if ruled_out(tag)]
        if not bad:
            return plan, []
        known = self.catalog.tags()
        counts: dict[str, int] = {}
        for item_id in history:
            for tag in self.catalog[item_id].tags:
                counts[tag] = counts.get(tag, 0) + 1
        in_range = [t for t in known if ranged and decade(t) is not None and not ruled_out(t)]
        if constraints.year_from is None:  # "older": the allowed decades nearest the range's end first
            in_range.reverse()
        order = [*in_range, *constraints.include, *sorted(counts, key=lambda t: -counts[t]), *known]
        spare = [t for t in dict.fromkeys(order) if t in known and t not in plan.tags and not ruled_out(t)
                 and t != "Uncategorized"]  # fmt: skip
        tags: dict[str, int] = {}
        notes = []
        for tag, n in plan.tags.items():
            if tag in bad and spare:
                new = spare.pop(0)
                tags[new] = n
                notes.append(f"{tag} -> {new}")
            elif tag in bad:
                continue
            else:
                tags[tag] = n
        data = {**plan.model_dump(), "tags": tags}
        if len(tags) != plan.tag_count:  # no replacement left (a tiny catalogue): shrink the plan honestly
            usable = [k for k in (3, 5, 10, 20) if k <= len(tags)] or [len(tags)]
            kept = dict(list(tags.items())[: usable[-1]])
            data |= {"tags": kept, "tag_count": usable[-1], "candidate_size": plan.candidate_size}
        fixed = Plan.model_validate(data, context={"known_tags": known})
        return fixed, [f"the plan named {', '.join(bad)}, which the request rules out: swapped on the device "
                       f"before retrieval ({'; '.join(notes)})"]  # fmt: skip

    def allowed(self, constraints: RequestConstraints | None, avoid: Sequence[int] = ()) -> np.ndarray | None:
        """[V + 1] booleans of the items a request allows (None when it allows every item)."""
        if (constraints is None or not constraints.filters) and not len(avoid):
            return None
        mask = constraints.allowed_mask(self.catalog) if constraints is not None else np.ones(
            self.catalog.num_items + 1, dtype=bool)
        mask[[i for i in avoid if 0 <= i < len(mask)]] = False
        return mask

    def seed_scores(self, seeds: Sequence[int]) -> SeedScores | None:
        """Candidate ids -> the highest cosine similarity to any seed item, in the item semantics of Eq. 1."""
        seeds = [int(s) for s in seeds if 1 <= int(s) <= self.catalog.num_items]
        if not seeds:
            return None
        table = self.item_table / np.maximum(np.linalg.norm(self.item_table, axis=1, keepdims=True), 1e-12)
        anchor = table[seeds]  # [S, d]

        def scores(candidates: np.ndarray) -> np.ndarray:
            return (table[candidates] @ anchor.T).max(axis=1).astype(np.float64)

        return scores

    # -- ranking (CDA4Rec Eq. 5-7, LSC4Rec Eq. 9-11) ----------------------------------------------------------
    def rank(self, candidates: np.ndarray, semantic: np.ndarray, beta: float, seen: Sequence[int],
             structured: StructuredScores | None = None, *, allowed: np.ndarray | None = None,
             seeds: Sequence[int] = ()) -> Ranking:  # fmt: skip
        """The one rank step (`tools.fusion.rank_step`), with a request's allowed items and seed items."""
        return rank_step(candidates, semantic, beta, seen, structured, allowed=allowed,
                         seeds=self.seed_scores(seeds))  # fmt: skip

    def shortlist(self, ranking: Ranking, k: int) -> tuple[list[int], list[float]]:
        """The first k of the order with distinct (title, year): MovieLens lists a few films twice."""
        seen, ids, scores = set(), [], []
        for item_id, score in zip(ranking.items.tolist(), ranking.scores.tolist(), strict=True):
            item = self.catalog[item_id]
            if (item.title, item.year) not in seen:
                seen.add((item.title, item.year))
                ids.append(item_id)
                scores.append(score)
                if len(ids) == k:
                    break
        return ids, scores

    # -- explanation (CDA4Rec III-H) -------------------------------------------------------------------------
    def explain(self, plan: Plan, ranked: Sequence[int], on_text: Callable[[str], None] | None = None) -> Explanation:
        """The device SLM explains the final list (a template when its text is unusable); `on_text` streams it."""
        items = [self.catalog[i] for i in ranked]
        return generate_explanation(plan, items, self.explain_model, known_tags=self.catalog.tags(),
                                    prompt=self.explain_prompt, on_text=on_text)  # fmt: skip

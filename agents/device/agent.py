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
from typing import Literal

import numpy as np
import torch
from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel

from agents.device.abstract import ABSTRACT_PROMPT, AbstractResult, generate_abstract, history_from_ids
from agents.device.encoders import EncoderShelf
from agents.device.explain import EXPLAIN_PROMPT, Explanation, generate_explanation
from tools.calibration import ReliabilityPolicy, SemanticCalibrator
from tools.chord import strategy_average_bits
from tools.data import Catalog
from tools.device_store import CachedSemantics, DeviceStore, query_key
from tools.fusion import Ranking, StructuredScores, rank_step
from tools.protocol import Abstract, ChordStrategy, Plan, PlanResult, StrategyRequest, UserProfile
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
    policy: ReliabilityPolicy = field(default_factory=ReliabilityPolicy)
    calibrator: SemanticCalibrator | None = None
    max_seq_len: int = 200
    precision: Literal["full", "chord"] = "full"
    resources: DeviceResources = field(default_factory=lambda: DeviceResources(max_avg_bits=4.0))

    # -- history -------------------------------------------------------------------------------------------
    def history(
        self, user: str, items: Sequence[int] | None = None, timestamps: Sequence[int] | None = None
    ) -> LocalHistory:
        """The user's history from the store (seeded once from the data set for a known user), or the one given.

        Unknown item ids are dropped with a warning; histories longer than the encoders read are noted.
        """
        if items is not None:
            items, stamps = list(items), list(timestamps) if timestamps is not None else list(range(len(items)))
        else:
            stored, stored_ts = self.store.history(user)
            seed = self.seeds(user) if not len(stored) else None
            if seed is not None:
                self.store.seed_history(user, *seed)
                stored, stored_ts = self.store.history(user)
            items, stamps = stored.tolist(), stored_ts.tolist()
        warnings = []
        if len(items) > self.max_seq_len:
            warnings.append(f"history has {len(items)} interactions; the device models read the newest "
                            f"{self.max_seq_len}")  # fmt: skip
        known = [n for n, item in enumerate(items) if 1 <= item <= self.catalog.num_items]
        if len(known) < len(items):
            first = next(item for item in items if not 1 <= item <= self.catalog.num_items)
            warnings.append(f"dropped {len(items) - len(known)} unknown item id(s) from the history, e.g. {first}")
            items, stamps = [items[n] for n in known], [stamps[n] for n in known]
        return LocalHistory(items, stamps, warnings)

    # -- SCaLRec cache ----------------------------------------------------------------------------------------
    def cached(self, user: str) -> CachedSemantics | None:
        return self.store.cached(user)

    def cache_verdict(self, user: str, query: str, history: Sequence[int]) -> CacheVerdict:
        """SCaLRec reliability of the cached cloud semantics against the interactions made since."""
        entry = self.cached(user)
        if entry is None:
            return CacheVerdict(present=False)
        if entry.query_key != query_key(query):
            return CacheVerdict(present=True, reason="new query")
        e_sem = np.asarray(entry.e_sem, np.float32)
        verdict = self.policy.judge(e_sem, self._new_items(entry, history), self.item_table)
        return CacheVerdict(present=True, reliable=verdict.reliable, reliability=verdict.reliability,
                            new_interactions=verdict.new_interactions)  # fmt: skip

    @staticmethod
    def _new_items(entry: CachedSemantics, history: Sequence[int]) -> np.ndarray:
        newer = history[entry.history_len :] if entry.history_len <= len(history) else history
        return np.asarray(newer, dtype=np.int64)

    def cached_candidates(self, entry: CachedSemantics, e_sem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The cached candidates, scored by `e_sem` (the cached embedding or its calibration), Eq. 3's score."""
        candidates = np.asarray(entry.candidates, dtype=np.int64)
        return candidates, (self.item_table[candidates] @ np.asarray(e_sem, np.float32)).astype(np.float64)

    def calibrate(self, entry: CachedSemantics, history: Sequence[int]) -> tuple[np.ndarray, int]:
        """SCaLRec on-device calibration of the cached e_sem with the newer interactions; (e_cal, how many)."""
        new_items = self._new_items(entry, history)
        e_sem = np.asarray(entry.e_sem, np.float32)
        if self.calibrator is None:
            return e_sem, len(new_items)
        return self.calibrator.calibrate(e_sem, new_items, self.item_table), len(new_items)

    def remember(self, user: str, query: str, history_len: int, e_sem: Sequence[float], candidates: Sequence[int],
                 scores: Sequence[float], plan: Plan) -> None:  # fmt: skip
        """Cache the cloud's semantic answer for SCaLRec's next reliability check."""
        self.store.store(user, CachedSemantics(e_sem=list(e_sem), candidates=list(candidates),
                                               candidate_scores=list(scores), history_len=history_len,
                                               plan=plan.model_dump(), query_key=query_key(query)))  # fmt: skip

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
        model, precision = self.encoders.get(name), FULL_PRECISION
        if strategy is not None:
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

        def scores(candidates: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return encoder.candidate_scores(user, torch.from_numpy(candidates))[0].numpy()

        return scores

    # -- ranking (CDA4Rec Eq. 5-7, LSC4Rec Eq. 9-11) ----------------------------------------------------------
    def rank(self, candidates: np.ndarray, semantic: np.ndarray, beta: float, seen: Sequence[int],
             structured: StructuredScores | None = None) -> Ranking:  # fmt: skip
        """The one rank step (`tools.fusion.rank_step`)."""
        return rank_step(candidates, semantic, beta, seen, structured)

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
    def explain(self, plan: Plan, ranked: Sequence[int]) -> Explanation:
        """The device SLM explains the final list (a template when its text is unusable)."""
        items = [self.catalog[i] for i in ranked]
        return generate_explanation(plan, items, self.explain_model, known_tags=self.catalog.tags(),
                                    prompt=self.explain_prompt)  # fmt: skip

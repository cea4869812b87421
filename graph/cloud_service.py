"""The cloud side: strategy planning, semantic user modelling (CDA4Rec Eq. 2) and tag-group retrieval (Eq. 3).

The cloud sees only boundary messages: an `Abstract` (already scrubbed on the device) and a `Plan`. The
same handlers serve the in-process transport and the HTTP service (`tandem cloud serve`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from agents.device import Abstract
from tandem.workspace import Workspace
from tools.chord import Chord, ChordStrategy, StrategyError, UserProfile
from tools.embeddings import ItemSemantics
from tools.plan import Plan, PlanResult
from tools.tag_index import TagIndex


class PlanRequest(BaseModel):
    abstract: Abstract


class SemanticRequest(BaseModel):
    abstract: Abstract
    plan: Plan


class StrategyRequest(BaseModel):
    """CHORD: the device's user profile z (Eq. 6) and which encoder it runs; never the history itself."""

    encoder: str
    profile: UserProfile


class SemanticResponse(BaseModel):
    e_sem: list[float] = Field(description="Semantic user embedding in item space (CDA4Rec Eq. 2).")
    candidates: list[int] = Field(description="Merged top-N_i of each selected tag, best first (Eq. 3).")
    scores: list[float] = Field(description="e_sem . e_i of each candidate.")


def semantic_user_embedding(abstract: Abstract, alpha: float, semantics: ItemSemantics) -> np.ndarray:
    """CDA4Rec Eq. 2: e_sem = alpha * AVG(Theta(q)) + (1 - alpha) * AVG(Theta(b)), projected to item space.

    An empty sanitized query carries no intent, so its weight moves to the behaviour summary.
    """
    return semantic_user_embeddings([abstract], [alpha], semantics)[0]


def semantic_user_embeddings(
    abstracts: list[Abstract], alphas: list[float], semantics: ItemSemantics
) -> np.ndarray:
    """CDA4Rec Eq. 2 for a batch of abstracts [B] -> [B, d], each distinct text embedded once."""
    queries = [a.sanitized_query.strip() for a in abstracts]
    summaries = [a.behavior_summary.strip() or "no behaviour recorded" for a in abstracts]
    texts = list(dict.fromkeys([q for q in queries if q] + summaries))
    vectors = dict(zip(texts, semantics.project_texts(texts), strict=True)) if texts else {}
    out = np.zeros((len(abstracts), semantics.dim), dtype=np.float32)
    for row, (query, summary, alpha) in enumerate(zip(queries, summaries, alphas, strict=True)):
        out[row] = vectors[summary] if not query else alpha * vectors[query] + (1.0 - alpha) * vectors[summary]
    return out


class CloudService:
    """Cloud handlers over one workspace. `planner(abstract, known_tags) -> PlanResult` is injected."""

    def __init__(
        self,
        workspace: Workspace,
        planner: Callable[[Abstract, list[str]], PlanResult],
        chord: Callable[[str], Chord | None] = lambda encoder: None,
    ) -> None:
        self.workspace = workspace
        self.planner = planner
        self.chord = chord

    @property
    def index(self) -> TagIndex:
        return self.workspace.index

    def plan(self, request: PlanRequest) -> PlanResult:
        """CDA4Rec III-C: the personalised strategy plan for this abstract."""
        return self.planner(request.abstract, self.index.tags())

    def semantic(self, request: SemanticRequest) -> SemanticResponse:
        """CDA4Rec III-D/E: Eq. 2, then Eq. 3 over the plan's tag groups."""
        e_sem = semantic_user_embedding(request.abstract, request.plan.alpha, self.workspace.semantics)
        found = self.index.retrieve(e_sem, request.plan.tags)
        return SemanticResponse(
            e_sem=e_sem.tolist(), candidates=[c.item_id for c in found], scores=[c.score for c in found]
        )

    def strategy(self, request: StrategyRequest) -> ChordStrategy:
        """CHORD Eq. 7-13 in the cloud: the profile -> the 2-bit-per-channel precision strategy."""
        chord = self.chord(request.encoder)
        if chord is None:
            raise StrategyError(f"the cloud has no CHORD hypernetworks for {request.encoder}")
        return chord.strategy_for_profile(request.profile)

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        """Route name -> bytes handler, shared by the in-process and HTTP transports."""

        def route(method: Callable[[Any], BaseModel], request_type: type[BaseModel]) -> Callable[[bytes], bytes]:
            return lambda payload: method(request_type.model_validate_json(payload)).model_dump_json().encode()

        return {"plan": route(self.plan, PlanRequest), "semantic": route(self.semantic, SemanticRequest),
                "strategy": route(self.strategy, StrategyRequest)}  # fmt: skip

"""The cloud agent: planning (CDA4Rec III-C), semantic user modelling (Eq. 2), tag-group retrieval (Eq. 3) and
CHORD's per-user precision strategy (CHORD Eq. 7-13).

It is built from the catalogue's side of the world only: the tag list, the item-space text encoder, a tag
index and the planner's language model. It is never handed the workspace, the data set's sequences or the
device store, so it cannot reach a raw history by construction; what it learns about a user arrives as an
`Abstract` (or CHORD's profile z). The same methods serve the graph (in process or behind
`tandem cloud serve`), the evaluations and training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel

from agents.backends import describe, probe_model
from agents.cloud.neighbours import RETRIEVAL_TEXT, NeighbourPlanner, abstract_vectors
from agents.cloud.planner import PLAN_PROMPT, needs_adapter, plan_strategy, ranks_neighbours, retrieves_exemplars
from agents.cloud.semantic import TextSpace, semantic_user_embeddings
from ground.settings import StructuredMethod
from prompts import get_prompt
from tools.chord import Chord, StrategyError
from tools.plan_space import PlanPoint
from tools.protocol import Abstract, ChordStrategy, Plan, PlanResult, StrategyRequest, UserProfile
from tools.tag_index import TagRetriever

ChordLoader = Callable[[str], Chord | None]
ExemplarSource = Callable[[np.ndarray, int], list[dict]]
"""An abstract's unit vector in the text space, k -> the k nearest plan exemplars (`tools.exemplar_index`).
A source that also has `ranked(vector, m)` (the m best plan points of the nearest labelled abstracts, with their
mean rewards: `NeighbourPlanner.ranked`) and `ranking_source` serves prompts that show the neighbours' ranking."""


@dataclass(frozen=True)
class SemanticAnswer:
    """Eq. 2 and Eq. 3 for one abstract and plan: e_sem [d], candidate ids [C] and e_sem . e_i [C], best first."""

    e_sem: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray


def _no_chord(encoder: str) -> Chord | None:
    return None


@dataclass
class CloudAgent:
    """Plans, models semantics and retrieves for abstracts; answers CHORD strategies for profiles."""

    space: TextSpace
    index: TagRetriever
    planner_model: BaseChatModel | None = None
    plan_prompt: str = PLAN_PROMPT
    structured_output: bool = True
    structured_method: StructuredMethod = "json_schema"
    chord: ChordLoader = field(default=_no_chord)
    learned: NeighbourPlanner | None = None  # plans from hindsight labels instead of a language model or the rules
    exemplars: ExemplarSource | None = None  # few-shot examples for a prompt that retrieves them
    adapter_model: BaseChatModel | None = None  # the planner model with the LoRA plan adapter (Eq. 8), if trained

    def known_tags(self) -> list[str]:
        return self.index.tags()

    def health(self) -> dict[str, dict[str, Any]]:
        """Each dependency the cloud answers with (chroma, index, planner), {"ok": bool, ...} each."""
        check = getattr(self.index, "health", None)
        report: dict[str, dict[str, Any]] = dict(check()) if check else {"index": {"ok": True}}
        if self.learned is not None:
            report["planner"] = {"ok": True, "kind": "learned", "labels": self.learned.source}
        elif self.planner_model is None:
            report["planner"] = {"ok": True, "kind": "rule"}
        else:
            report["planner"] = {"kind": "llm", **probe_model(self.planner_model)}
        return report

    def plan(self, abstract: Abstract) -> PlanResult:
        """CDA4Rec III-C (Fig. 4): the personalised strategy plan for this abstract."""
        if self.learned is not None:
            return self.learned.plan(abstract, self.known_tags(), self.space)
        model = self.adapter_model if self._adapter_answers() else self.planner_model
        ranking = self.ranked_points if hasattr(self.exemplars, "ranked") else None
        return plan_strategy(abstract, self.known_tags(), model, prompt=self.plan_prompt,
                             structured=self.structured_output, method=self.structured_method,
                             exemplars=self.nearest_exemplars if self.exemplars is not None else None,
                             ranking=ranking)  # fmt: skip

    def exemplar_source(self) -> str | None:
        """What this cloud's plans depend on beyond the prompt's text: the labels behind the retrieved few-shot
        examples when its prompt retrieves them (plan caches are keyed by it), else None."""
        if self.learned is not None or self.planner_model is None or self.exemplars is None:
            return None
        template = get_prompt(self.plan_prompt)
        if not retrieves_exemplars(template):
            return None
        if ranks_neighbours(template):
            return f"ranking-{getattr(self.exemplars, 'ranking_source', 'custom')}-{RETRIEVAL_TEXT}"
        return f"exemplars-{getattr(self.exemplars, 'source', 'custom')}-{RETRIEVAL_TEXT}"

    def _adapter_answers(self) -> bool:
        """The plan prompt was written for the plan adapter (CDA4Rec Eq. 8) and this cloud has one."""
        return self.planner_model is not None and self.adapter_model is not None and \
            needs_adapter(get_prompt(self.plan_prompt))

    def planning_adapter(self) -> str | None:
        """"plan adapter <digest>" when the adapter answers this cloud's plan prompt, else None."""
        if not self._adapter_answers():
            return None
        name = describe(self.adapter_model)["model"]  # "<base> + plan adapter <digest>"
        return name.split(" + ", 1)[1] if " + " in name else name

    def adapter_source(self) -> str | None:
        """"adapter-<digest>" when the adapter answers this cloud's plan prompt (plan caches are keyed by it, so a
        retrained adapter plans afresh), else None."""
        label = self.planning_adapter()
        return None if label is None else f"adapter-{label.rsplit(' ', 1)[-1]}"

    def nearest_exemplars(self, abstract: Abstract, k: int) -> list[dict]:
        """The k plan exemplars nearest this abstract (its text in the cloud's own text space)."""
        if self.exemplars is None:
            return []
        return self.exemplars(abstract_vectors([abstract], self.space)[0], k)

    def ranked_points(self, abstract: Abstract, count: int) -> list[tuple[PlanPoint, float]]:
        """The `count` plan points that served the labelled abstracts nearest this one best, best first, with their
        mean hindsight reward (the learned planner's ranking, `NeighbourPlanner.ranked`)."""
        return self.exemplars.ranked(abstract_vectors([abstract], self.space)[0], count)  # type: ignore[union-attr]

    def semantic_embeddings(self, abstracts: Sequence[Abstract], alphas: Sequence[float]) -> np.ndarray:
        """CDA4Rec Eq. 2 for a batch: e_sem [B, d]."""
        return semantic_user_embeddings(abstracts, alphas, self.space)

    def retrieve(self, e_sem: np.ndarray, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
        """CDA4Rec Eq. 3: the top-N_i items of each of the plan's tag groups, merged, best first."""
        return self.index.retrieve_ids(e_sem, plan.tags)

    def semantic(self, abstract: Abstract, plan: Plan) -> SemanticAnswer:
        """CDA4Rec III-D/E: Eq. 2 with the plan's alpha, then Eq. 3 over the plan's tag groups."""
        return self.semantic_batch([abstract], [plan])[0]

    def semantic_batch(self, abstracts: Sequence[Abstract], plans: Sequence[Plan]) -> list[SemanticAnswer]:
        """`semantic` for many (abstract, plan) pairs, embedding each distinct text once and retrieving for all
        of them in as few index calls as the backend allows (`TagRetriever.retrieve_many`)."""
        e_sem = self.semantic_embeddings(abstracts, [p.alpha for p in plans])
        if len(plans) == 1:
            return [SemanticAnswer(e_sem[0], *self.retrieve(e_sem[0], plans[0]))]
        ranked = self.index.retrieve_many(e_sem, [plan.tags for plan in plans])
        return [SemanticAnswer(vector, ids, scores) for vector, (ids, scores) in zip(e_sem, ranked, strict=True)]

    def strategy(self, request: StrategyRequest) -> ChordStrategy:
        """CHORD Eq. 7-13 in the cloud: the profile z -> the 2-bit-per-channel precision strategy."""
        chord = self.chord(request.encoder)
        if chord is None:
            raise StrategyError(f"the cloud has no CHORD hypernetworks for {request.encoder}")
        return chord.strategy_for_profile(UserProfile.model_validate(request.profile))

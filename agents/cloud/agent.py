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
    """Eq. 2 and Eq. 3 for one abstract and plan: e_sem [d], candidate ids [C] and e_sem . e_i [C], best first;
    `space` names the item table e_i comes from: "" = Eq. 1's, else the behaviour side's `TextSpace.table_key`."""

    e_sem: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    space: str = ""


@dataclass(frozen=True)
class SemanticSide:
    """Where e_sem is made and searched: a space (Eq. 2) and the tag index over that space's item table (Eq. 3)."""

    space: TextSpace
    index: TagRetriever


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
    behaviour: SemanticSide | None = None  # query-less abstracts' e_sem in the encoder's item space, if installed

    @property
    def semantic_key(self) -> str:
        """What this cloud's e_sem depends on (the key of the models fitted to it): the text side's key, and the
        behaviour side's when there is one."""
        return self.space.key if self.behaviour is None else f"{self.space.key}|{self.behaviour.space.key}"

    @property
    def no_query_side(self) -> SemanticSide:
        """The side that answers abstracts without a query (behaviour-only e_sem: SCaLRec's caches, calibrators)."""
        return self.behaviour if self.behaviour is not None else SemanticSide(self.space, self.index)

    def describe_semantics(self) -> str:
        """Eq. 2's map in words: the text side's, and the behaviour side's when there is one."""
        if self.behaviour is None:
            return self.space.describe()
        return f"{self.space.describe()}; abstracts without a query: {self.behaviour.space.describe()}"

    def side(self, abstract: Abstract, behaviour: bool = True) -> SemanticSide:
        """The side that answers this abstract: an abstract with no query goes to the behaviour side (the encoder's
        item space, where a history's next item is found best) when there is one and `behaviour` allows it;
        everything else to Eq. 1's text space (where a query's words are)."""
        if behaviour and self.behaviour is not None and not abstract.sanitized_query.strip():
            return self.behaviour
        return SemanticSide(self.space, self.index)

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

    def semantic_embeddings(self, abstracts: Sequence[Abstract], alphas: Sequence[float],
                            behaviour: bool = True) -> list[np.ndarray]:  # fmt: skip
        """CDA4Rec Eq. 2 for a batch: each abstract's e_sem [d] in the item space of its `side`."""
        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(abstracts)
        for _, rows, e_sem in self._embedded(abstracts, alphas, behaviour):
            for row, vector in zip(rows, e_sem, strict=True):
                out[row] = vector
        return out

    def _embedded(self, abstracts: Sequence[Abstract], alphas: Sequence[float],
                  behaviour: bool) -> list[tuple[SemanticSide, list[int], np.ndarray]]:  # fmt: skip
        """Eq. 2 per side: (side, the rows of `abstracts` it answers, their e_sem [R, d]), text side first."""
        groups: dict[bool, tuple[SemanticSide, list[int]]] = {}
        for row, abstract in enumerate(abstracts):
            side = self.side(abstract, behaviour)
            groups.setdefault(side is self.behaviour, (side, []))[1].append(row)
        return [(side, rows, semantic_user_embeddings([abstracts[r] for r in rows], [alphas[r] for r in rows],
                                                      side.space))
                for side, rows in (groups[key] for key in sorted(groups))]  # fmt: skip

    def _space_name(self, side: SemanticSide) -> str:
        return side.space.table_key if side is self.behaviour else ""

    def semantic(self, abstract: Abstract, plan: Plan, behaviour: bool = True) -> SemanticAnswer:
        """CDA4Rec III-D/E: Eq. 2 with the plan's alpha, then Eq. 3 over the plan's tag groups, on the abstract's
        side (`side`; `behaviour=False` keeps it in the text space, for a device without the encoder space)."""
        return self.semantic_batch([abstract], [plan], behaviour)[0]

    def semantic_batch(self, abstracts: Sequence[Abstract], plans: Sequence[Plan],
                       behaviour: bool = True) -> list[SemanticAnswer]:  # fmt: skip
        """`semantic` for many (abstract, plan) pairs, embedding each distinct text once and retrieving for all
        of them in as few index calls as the backend allows (`TagRetriever.retrieve_many`), one call per side
        (CDA4Rec Eq. 3: the top-N_i items of each of the plan's tag groups, merged, best first)."""
        out: list[SemanticAnswer | None] = [None] * len(abstracts)
        for side, rows, e_sem in self._embedded(abstracts, [plan.alpha for plan in plans], behaviour):
            if len(rows) == 1:
                ranked = [side.index.retrieve_ids(e_sem[0], plans[rows[0]].tags)]
            else:
                ranked = side.index.retrieve_many(e_sem, [plans[r].tags for r in rows])
            for row, vector, (ids, scores) in zip(rows, e_sem, ranked, strict=True):
                out[row] = SemanticAnswer(vector, ids, scores, self._space_name(side))
        return out  # type: ignore[return-value]

    def top_answers(self, abstracts: Sequence[Abstract], alpha: float, size: int) -> list[SemanticAnswer]:
        """Eq. 2 at a fixed alpha, then the `size` best items of the whole catalogue by e_sem . e_i (no tags)."""
        out: list[SemanticAnswer | None] = [None] * len(abstracts)
        for side, rows, e_sem in self._embedded(abstracts, [alpha] * len(abstracts), True):
            for row, vector in zip(rows, e_sem, strict=True):
                out[row] = SemanticAnswer(vector, *side.index.top(vector, size), self._space_name(side))
        return out  # type: ignore[return-value]

    def strategy(self, request: StrategyRequest) -> ChordStrategy:
        """CHORD Eq. 7-13 in the cloud: the profile z -> the 2-bit-per-channel precision strategy."""
        chord = self.chord(request.encoder)
        if chord is None:
            raise StrategyError(f"the cloud has no CHORD hypernetworks for {request.encoder}")
        return chord.strategy_for_profile(UserProfile.model_validate(request.profile))

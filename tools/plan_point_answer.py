"""The plan adapter's compact answer: one plan-space point as a five-key JSON object (CDA4Rec Eq. 8 target).

The hindsight target of an abstract (`evals.hindsight`) is a point of the plan space (`tools.plan_space`):
alpha (Eq. 2), tag count and candidate size (Eq. 3), encoder (Eq. 4) and beta (Eq. 5); its tags and weights are
the rule planner's for that abstract (`PlanPoint.plan_for`). The adapter therefore writes only the point, e.g.
`{"a":0.3,"k":5,"n":2000,"e":"SASRec","b":0.1}` (about 25 tokens instead of a full plan), under a grammar whose
enums are the space's own values, and `resolve_point_answer` turns it into a full valid `Plan`: parsed when the
text is exactly one valid point, else the general parser and repair (`tools.plan_parsing.resolve_plan`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from tools.plan_parsing import Embed, resolve_plan
from tools.plan_space import DEFAULT_SPACE, PlanPoint, PlanSpace
from tools.protocol import Abstract, PlanResult
from tools.rule_planner import signals_from_abstract

ANSWER_KEYS = ("a", "k", "n", "e", "b")
WHY = "plan adapter (CDA4Rec Eq. 8): hindsight-trained plan point"
EXEMPLARS_WHY = "language model after retrieved exemplars: the point that served the nearest labelled users"
RANKING_WHY = "language model choosing among the plan points that served the nearest labelled users best"


def space_betas(space: PlanSpace = DEFAULT_SPACE) -> tuple[float, ...]:
    return tuple(sorted({b for _, b in space.encoder_betas}))


class PointAnswer(BaseModel):
    """One plan-space point in the adapter's compact form: a alpha, k tag count, n candidates, e encoder, b beta."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: float
    k: int
    n: int
    e: Literal["SASRec", "SURGE", "none"]
    b: float

    @model_validator(mode="after")
    def _on_grid(self) -> PointAnswer:
        """Each value one the grammar allows (the space's alphas, tag counts, sizes, encoders and betas). Any
        encoder/beta pair makes a valid plan (encoder none means beta 1, `effective_beta`), also one the space
        does not list (SASRec with beta 1), so pairs are not checked."""
        space = DEFAULT_SPACE
        if self.a not in space.alphas or self.k not in space.tag_counts or self.n not in space.sizes or \
                self.b not in space_betas(space):
            raise ValueError(f"point {self.model_dump()} is not in the plan space")
        return self

    @classmethod
    def of_point(cls, point: PlanPoint) -> PointAnswer:
        return cls(a=point.alpha, k=point.tag_count, n=point.candidate_size, e=point.encoder, b=point.beta)  # type: ignore[arg-type]

    @classmethod
    def of_compact(cls, plan: dict[str, Any]) -> PointAnswer:
        """The point a compact plan (`tools.plan_schema`: a, n, t, e, b) makes: its tag count is len(t). A retrieved
        exemplar's target plan is shown this way to a prompt that answers in points (ValueError when off the grid)."""
        try:
            return cls(a=plan["a"], k=len(plan["t"]), n=plan["n"], e=plan["e"], b=plan["b"])
        except (KeyError, TypeError, ValidationError) as error:
            raise ValueError(f"exemplar plan {json.dumps(plan)[:120]} is not a plan-space point: {error}") from None

    def point(self) -> PlanPoint:
        return PlanPoint(self.a, self.k, self.n, self.e, self.b)

    def text(self) -> str:
        """The exact text the grammar lets the model write for this point (keys in schema order, no spaces)."""
        return json.dumps({key: getattr(self, key) for key in ANSWER_KEYS}, separators=(",", ":"))


def point_answer_schema(space: PlanSpace = DEFAULT_SPACE) -> dict[str, Any]:
    """The JSON schema (a llama.cpp grammar on the embedded model) of the adapter's answer: only space values."""
    return {
        "title": "plan_point",
        "description": "CDA4Rec plan-space point: a alpha, k tag count, n candidates, e encoder, b beta.",
        "type": "object",
        "properties": {
            "a": {"enum": [float(a) for a in space.alphas]},
            "k": {"enum": list(space.tag_counts)},
            "n": {"enum": list(space.sizes)},
            "e": {"enum": sorted({e for e, _ in space.encoder_betas})},
            "b": {"enum": [float(b) for b in space_betas(space)]},
        },
        "required": list(ANSWER_KEYS),
        "additionalProperties": False,
    }


def point_choice_schema(choices: Sequence[PointAnswer]) -> dict[str, Any]:
    """The JSON schema (a llama.cpp grammar) of an answer that must be one of `choices` (duplicates dropped):
    a union of objects whose five values are constants, so the model can only pick one of these points."""
    unique = list(dict.fromkeys(choices))
    if not unique:
        raise ValueError("a choice of plan points needs at least one point")
    return {
        "title": "plan_point",
        "description": "one of the plan-space points shown",
        "oneOf": [{"type": "object", "properties": {key: {"const": getattr(p, key)} for key in ANSWER_KEYS},
                   "required": list(ANSWER_KEYS), "additionalProperties": False} for p in unique],
    }  # fmt: skip


def parse_point_answer(text: str) -> PointAnswer:
    """The point in `text`, strictly: one JSON object with exactly the five keys, on the grid (else ValueError)."""
    try:
        return PointAnswer.model_validate(json.loads(text.strip()))
    except (json.JSONDecodeError, ValidationError, TypeError) as error:
        raise ValueError(f"not a plan point: {error}") from None


def resolve_point_answer(
    text: str, abstract: Abstract, known_tags: Sequence[str], *, embed: Embed | None = None, prompt: str | None = None,
    stats: dict | None = None, why: str = WHY,
) -> PlanResult:
    """The adapter's text -> a full plan: status "parsed" when it is one valid point (made into a plan with the
    rule planner's tags, `PlanPoint.plan_for`), else the general parse -> repair -> rule fallback."""
    known = list(known_tags)
    try:
        answer = parse_point_answer(text)
    except ValueError:
        signals = signals_from_abstract(abstract, known)
        return resolve_plan(text, known, signals, embed=embed, prompt=prompt, stats=stats)
    plan = answer.point().plan_for(abstract, known, why=why)
    return PlanResult(plan=plan, status="parsed", raw_text=text, prompt=prompt, stats=stats)

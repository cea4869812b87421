"""The compact JSON form of a plan that the language model writes (CDA4Rec Fig. 4, structured output).

Short keys and enums keep the model's output to a few tokens: a = alpha, n = candidate size, t = tag
weights (only known tags, weights 1-5), e = encoder, b = beta, w = one short explanation. In this form the
tag values are relative *weights* (the paper's "retrieval weights ... to guide proportional item
sampling"), turned into counts N_i by proportional allocation (`tools.rule_planner.allocate`). The schema
is enforced by the backend (a llama.cpp grammar, Ollama's `format`, OpenAI's `response_format`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tools.protocol import CANDIDATE_SIZES, ENCODERS, Plan

WEIGHT_STEPS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
TAG_WEIGHTS: tuple[int, ...] = (1, 2, 3, 4, 5)
MAX_WHY = 100



def plan_json_schema(known_tags: Sequence[str]) -> dict[str, Any]:
    """The compact JSON schema the backend enforces (llama.cpp grammar / Ollama `format`).

    Short keys and enums keep the output to a few tokens: a = alpha, n = candidate size, t = tag weights
    (only known tags, weights 1-5), e = encoder, b = beta, w = one short explanation.
    """
    return {
        "title": "plan",  # OpenAI's json_schema and function calling name the schema by its title
        "description": "CDA4Rec strategy plan: a alpha, n candidates, t tag weights, e encoder, b beta, w why.",
        "type": "object",
        "properties": {
            "a": {"enum": list(WEIGHT_STEPS)},
            "n": {"enum": list(CANDIDATE_SIZES)},
            "t": {
                "type": "object",
                "properties": {tag: {"enum": list(TAG_WEIGHTS)} for tag in known_tags},
                "additionalProperties": False,
            },
            "e": {"enum": list(ENCODERS)},
            "b": {"enum": list(WEIGHT_STEPS)},
            "w": {"type": "string", "maxLength": MAX_WHY},
        },
        "required": ["a", "n", "t", "e", "b", "w"],
        "additionalProperties": False,
    }


def plan_to_compact(plan: Plan) -> dict[str, Any]:
    """A plan in the compact JSON form (tag weights 1-5 in proportion to N_i), e.g. for few-shot examples."""
    top = max(plan.tags.values())
    weights = {tag: max(1, min(5, round(5 * n / top))) for tag, n in plan.tags.items()}
    return {
        "a": round(plan.alpha, 1), "n": plan.candidate_size, "t": weights, "e": plan.encoder,
        "b": round(plan.beta, 1), "w": plan.explanations.retrieval[:MAX_WHY],
    }  # fmt: skip

"""Device agent: a short natural-language explanation of the final list (CDA4Rec III-H, Fig. 5).

The device SLM reads the plan (Fig. 4 line format) and the recommended items with their descriptions.
Its text is kept only when it is not degenerate, not copied from the prompt, and names no known tag that
neither the plan nor the list carries; otherwise a template built from the plan explains the list.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field

from agents.backends import generate
from agents.device.abstract import copied, degenerate
from agents.llm import CallStats, LLMError, stats_of
from prompts import get_prompt
from tools.data.catalog import Item
from tools.protocol import Plan

EXPLAIN_PROMPT = "explain@1"
EXPLAIN_FIELDS = frozenset({"plan", "items"})
EXPLAIN_ITEMS = 10


class Explanation(BaseModel):
    """A natural-language explanation E_u of the final list (CDA4Rec III-H)."""

    text: str
    prompt: str = EXPLAIN_PROMPT
    source: Literal["slm", "template"]
    stats: CallStats | None = None
    notes: list[str] = Field(default_factory=list)



def describe_items(items: Sequence[Item]) -> str:
    """The final list R_u with item descriptions, one numbered line per item (Fig. 5)."""
    lines = []
    for rank, item in enumerate(items[:EXPLAIN_ITEMS], start=1):
        year = f" ({item.year})" if item.year else ""
        lines.append(f"{rank}. {item.title}{year} - {', '.join(item.tags) or 'no tags'}")
    return "\n".join(lines) or "(empty list)"


def template_explanation(plan: Plan, items: Sequence[Item]) -> str:
    """A deterministic explanation from the plan alone, used when the SLM output is unusable."""
    tags = ", ".join(list(plan.tags)[:3])
    focus = "your request" if plan.alpha >= 0.5 else "what you watched"
    encoder = "" if plan.encoder == "none" else f" and by the order of your recent viewing ({plan.encoder})"
    return (
        f"These {len(items)} picks come mostly from {tags}, chosen by {focus}{encoder}; "
        f"the ranking weighs meaning {plan.beta:.0%} and viewing patterns {1 - plan.beta:.0%}."
    )


def ungrounded_tags(text: str, plan: Plan, items: Sequence[Item], known_tags: Sequence[str]) -> list[str]:
    """Known tags the explanation names although neither the plan nor the listed items carry them."""
    allowed = {t.lower() for t in plan.tags} | {t.lower() for item in items for t in item.tags}
    named = [t for t in known_tags if re.search(rf"\b{re.escape(t.lower())}(s|es)?\b", text.lower())]
    return [t for t in named if t.lower() not in allowed]


def generate_explanation(
    plan: Plan, items: Sequence[Item], llm: BaseChatModel | None, *, max_tokens: int = 60,
    known_tags: Sequence[str] = (), prompt: str = EXPLAIN_PROMPT, on_text: Callable[[str], None] | None = None,
) -> Explanation:
    """CDA4Rec III-H (Fig. 5): plan + final list with item descriptions -> a short explanation (streamed piece by
    piece to `on_text` when given, e.g. the chat showing it as it is written).

    The SLM's text is kept only if it is not degenerate, not copied from the prompt, and names no known
    tag that neither the plan nor the list carries (a 270M base model readily echoes its worked example);
    otherwise a template built from the plan is used, and the reason is noted.
    """
    notes: list[str] = []
    if llm is not None:
        template = get_prompt(prompt)
        text_in = template.render(plan=plan.to_lines(), items=describe_items(items))
        start = time.perf_counter()
        try:
            answer = generate(llm, [HumanMessage(text_in)], max_tokens=max_tokens, stop=["\n\n", "\nUser Plan:"],
                              on_text=on_text)  # fmt: skip
        except LLMError as error:
            notes.append(f"SLM failed after {time.perf_counter() - start:.1f} s: {error}")
        else:
            text = " ".join(str(answer.content).split())
            sentences = re.split(r"(?<=[.!?])\s+", text)
            text = " ".join(sentences[:3]) if len(sentences) > 1 else text
            invented = ungrounded_tags(text, plan, items, known_tags)
            if not degenerate(text, 5) and not copied(text, text_in) and not invented:
                return Explanation(text=text, prompt=template.ref, source="slm", stats=stats_of(answer))
            reason = f"names {', '.join(invented)}, which the list does not have" if invented else (
                "empty, repetitive or copied")  # fmt: skip
            notes.append(f"SLM explanation unusable ({reason}): template used")
            return Explanation(text=template_explanation(plan, items), prompt=template.ref, source="template",
                               stats=stats_of(answer), notes=notes)  # fmt: skip
    return Explanation(text=template_explanation(plan, items), source="template", notes=notes)

"""Plan caches are keyed by everything a plan depends on: a prompt that retrieves its few-shot examples is keyed
by the labels behind them too, so plans made with old exemplars are never reused for new ones."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from agents.cloud.agent import CloudAgent
from evals.plans import results_path


class Exemplars:
    def __init__(self, source: str) -> None:
        self.source = source
        self.ranking_source = f"{source}-k100"

    def __call__(self, vector, k: int) -> list[dict]:
        return []


def _cloud(prompt: str, source: str | None) -> CloudAgent:
    model = GenericFakeChatModel(messages=iter([]))
    return CloudAgent(space=None, index=None, planner_model=model, plan_prompt=prompt,  # type: ignore[arg-type]
                      exemplars=Exemplars(source) if source else None)  # fmt: skip


def test_retrieved_exemplars_key_the_plan_cache():
    device = SimpleNamespace(abstract_prompt="abstract@2", abstract_model=None)
    old, new = _cloud("plan_exemplars@1", "labels-a"), _cloud("plan_exemplars@1", "labels-b")
    assert old.exemplar_source() == "exemplars-labels-a-facts"  # the labels, and what neighbours are found by
    ranked = replace(old, plan_prompt="plan_exemplars@4")  # the neighbours' ranking: the reward table's labels
    assert ranked.exemplar_source() == "ranking-labels-a-k100-facts"
    assert results_path(Path("/tmp/x"), "ml-100k", SimpleNamespace(abstract_prompt="abstract@2", abstract_model=None),
                        ranked) != results_path(Path("/tmp/x"), "ml-100k", SimpleNamespace(
                            abstract_prompt="abstract@2", abstract_model=None), old)  # fmt: skip
    out = Path("/tmp/x")
    assert results_path(out, "ml-100k", device, old) != results_path(out, "ml-100k", device, new)
    fixed = _cloud("plan_json@1", "labels-a")  # a prompt with fixed examples ignores the collection
    assert fixed.exemplar_source() is None
    assert results_path(out, "ml-100k", device, fixed) == results_path(out, "ml-100k", device,
                                                                       replace(fixed, exemplars=Exemplars("labels-b")))
    assert replace(old, planner_model=None).exemplar_source() is None  # the rule planner reads no exemplars

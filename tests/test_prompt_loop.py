"""The prompt engineer's loop: new version -> edit -> `eval plans` reruns (never reuses) -> compare, verdict.

Fast tests drive the loop's bookkeeping with a scripted planner (digest keying, fresh alternating comparison,
"changed" only when the plan changed, raw scoring before repair, the verdict); the slow test drives the
whole loop through the CLI with the embedded model on a single validation user.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field
from rich.console import Console
from typer.testing import CliRunner

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import TextSpace
from agents.device.encoders import EncoderShelf
from agents.llm import CallStats, GenerationOptions, messages_to_prompt
from agents.prompt_roles import choose_prompts
from evals.paired import PairedDelta, paired_bootstrap
from evals.plan_compare import changed_plans, verdict
from evals.plan_run import PlanEvalConfig, run_plan_evals
from evals.plan_suite import build_suite
from evals.plans import CaseScore, score_tips
from graph.runtime import TandemRuntime, build_device
from ground.errors import TandemError
from prompts import get_prompt, new_version
from tandem.cli import app
from tools.device_store import DeviceStore
from tools.tag_index import ExactTagIndex

MARKER = "Prefer a compact scope."
BROAD = '{"a": 0.8, "n": 2000, "t": {"Comedy": 5, "Drama": 3, "Romance": 2}, "e": "SASRec", "b": 0.7, "w": "broad"}'
COMPACT = '{"a": 0.8, "n": 500, "t": {"Comedy": 5, "Drama": 3, "Romance": 2}, "e": "SASRec", "b": 0.2, "w": "tight"}'


class MarkerChat(GenerationOptions):  # structured output through the `json_schema` keyword, as the embedded model
    """A scripted planner: COMPACT when the prompt carries MARKER, else BROAD; records which it saw."""

    seen: list[bool] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "marker"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:  # fmt: skip
        marked = MARKER in messages_to_prompt(messages)
        self.seen.append(marked)
        text = COMPACT if marked else BROAD
        stats = CallStats(backend="fake", model="marker", structured=True, completion_tokens=20, latency_s=0.01)
        message = AIMessage(content=text, response_metadata={"call_stats": stats.model_dump()})
        return ChatResult(generations=[ChatGeneration(message=message)])


@pytest.fixture
def agents(settings, built_index):
    """A rules-only device (abstracts from the rules, real encoders) and a scripted-planner cloud."""
    ws = built_index
    device = build_device(settings, ws, EncoderShelf(settings.models_dir, ws.dataset), DeviceStore(":memory:"), None)
    index = ExactTagIndex(ws.dataset.catalog, ws.semantics.table)
    llm = CloudAgent(space=TextSpace(ws.semantics), index=index, planner_model=MarkerChat())
    return ws, device, {"llm": llm, "rule": replace(llm, planner_model=None)}


def _flat(result) -> str:
    """CLI output with line wrapping undone."""
    return " ".join(result.output.split())


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_results_are_keyed_by_digest_and_an_edit_reruns_saying_so(user_prompts, agents, tmp_path):
    ws, device, clouds = agents
    new_version("plan_json", "plan_json@1")
    device, clouds = device, {k: replace(c, plan_prompt="plan_json@2") for k, c in clouds.items()}
    config = PlanEvalConfig(size=4, seed=1, adversarial=False, accuracy=False, progress=False)
    out = tmp_path / "out"

    def run() -> tuple[dict, str]:
        console = Console(record=True, width=200)
        report = run_plan_evals(ws, device, clouds, config, out, console)
        return report, console.export_text()

    _, first = run()
    assert "no earlier results for this text: running all 4 cases" in first
    calls = len(clouds["llm"].planner_model.seen)
    _, again = run()
    assert "all 4 cases already done with this exact text (reused)" in again
    assert len(clouds["llm"].planner_model.seen) == calls  # nothing planned again
    old_digest = get_prompt("plan_json@2").digest
    _edit(user_prompts / "plan_json@2.txt", "Known tags:", f"{MARKER}\nKnown tags:")
    report, edited = run()
    assert f"the text changed since the last run (#{old_digest}); earlier results are not reused" in edited
    assert len(clouds["llm"].planner_model.seen) == calls + 4 and all(clouds["llm"].planner_model.seen[-4:])
    assert report["prompts"]["plan_json@2"] == get_prompt("plan_json@2").ident != f"plan_json@2#{old_digest}"
    assert report["summaries"]["plan_json@2"]["valid as written (parsed)"] == 1.0
    assert len(list((out / "runs").glob("*plan_json-v2-*"))) == 2  # old text's results kept, not reused
    assert not list(Path(get_prompt("plan_json@1").path.parent).glob("plan_json@2*"))  # never in the package


def test_compare_runs_both_fresh_alternating_with_accuracy_and_a_verdict(user_prompts, agents, tmp_path):
    ws, device, clouds = agents
    new_version("plan_json", "plan_json@1")
    _edit(user_prompts / "plan_json@2.txt", "Known tags:", f"{MARKER}\nKnown tags:")
    config = PlanEvalConfig(size=6, seed=2, compare=("plan_json@1", "plan_json@2"), progress=False)
    console = Console(record=True, width=220)
    report = run_plan_evals(ws, device, clouds, config, tmp_path / "out", console)
    text = console.export_text()
    seen = clouds["llm"].planner_model.seen
    cases = report["suite"]["cases"]
    assert cases == 6 + 13 and len(seen) == 2 * cases
    assert seen[:4] == [False, True, True, False]  # A first on even cases, B first on odd ones
    # every case's plan changed (2000 -> 500 candidates, beta 0.7 -> 0.2) and nothing else counts as a change
    assert len(report["changed"]) == cases and "candidate_size 2000 -> 500" in report["changed"][0][1]
    assert f"{cases} of {cases} plans changed" in text
    deltas = {d["metric"]: d for d in report["deltas"]}
    assert deltas["valid as written"]["delta"] == 0.0
    tips = report["summaries"]
    expected = tips["plan_json@2"]["tips followed, raw (mean)"] - tips["plan_json@1"]["tips followed, raw (mean)"]
    assert deltas["tips followed (raw)"]["delta"] == pytest.approx(expected) and expected != 0
    assert deltas["tips followed (raw)"]["low"] <= expected <= deltas["tips followed (raw)"]["high"]
    assert report["verdict"] == verdict("plan_json@1", "plan_json@2", [PairedDelta(**d) for d in report["deltas"]])
    assert report["verdict"] in text
    rows = report["accuracy"]["rows"]
    assert set(rows) == {"rule planner", "plan_json@1", "plan_json@2"} and report["accuracy"]["users"] == 6
    assert all(0.0 <= r["NDCG@10"] <= r["HR@10"] <= 1.0 for r in rows.values())
    assert {"HR@10", "NDCG@10"} <= set(deltas)
    assert (tmp_path / "out" / "reports").is_dir() and list((tmp_path / "out" / "compare").glob("*.jsonl"))


def test_identical_plans_are_not_changed_even_when_explanations_differ():
    def score(plan: dict, why: str, tips: dict) -> CaseScore:
        return CaseScore(case_id="c", case_key="c-1", kind="dense", prompt="p@1", structured=True, status="parsed",
                         violations=[], tips=tips, leakage_score=1.0, leaks=[], latency_s=0.1, tokens=3,
                         plan={**plan, "explanations": {"semantic": why}}, abstract={})  # fmt: skip

    plan = {"alpha": 0.5, "tag_count": 3, "candidate_size": 500, "tags": {"Drama": 500}, "encoder": "SASRec",
            "beta": 0.5}  # fmt: skip
    a, b = score(plan, "one", {"x": True}), score(plan, "two", {"x": False})
    assert changed_plans([a], [b]) == []
    c = score({**plan, "beta": 0.9}, "one", {"x": True})
    assert changed_plans([a], [c]) == [("c", "beta 0.5 -> 0.9")]


def test_tips_are_scored_on_the_raw_output_before_repair(ml100k, ml100k_splits):
    case = build_suite(ml100k, ml100k_splits, size=2, seed=0, adversarial=False)[1]  # sparse
    assert case.kind == "sparse"
    raw = {"alpha": 0.5, "tag_count": 3, "candidate_size": 2000, "encoder": "SASRec", "beta": None}  # no beta
    repaired = {**raw, "beta": 0.8}
    assert score_tips(case, 3, raw)["sparse history -> semantic-heavy"] is False
    assert score_tips(case, 3, repaired)["sparse history -> semantic-heavy"] is True
    assert all(v is False for v in score_tips(case, 3, None).values())  # nothing parseable: every tip fails


def test_suite_is_validation_users_plus_thirteen_adversarial(ml100k, ml100k_splits):
    suite = build_suite(ml100k, ml100k_splits, size=200, seed=0)
    regular = [c for c in suite if c.kind != "adversarial"]
    assert len(regular) == 200 and len(suite) == 213
    valid = {(i.user, i.target) for i in ml100k_splits.valid}
    test = {(i.user, i.target) for i in ml100k_splits.test}
    assert all((c.user, c.target) in valid for c in regular)
    assert not any((c.user, c.target) in test and (c.user, c.target) not in valid for c in regular)
    assert len({c.key for c in suite}) == len(suite)
    assert suite == build_suite(ml100k, ml100k_splits, size=200, seed=0)  # seeded
    smaller = build_suite(ml100k, ml100k_splits, size=30, seed=0, adversarial=False)
    assert smaller == regular[:30]  # a smaller suite is the start of a larger one: frozen abstracts carry over


def test_paired_bootstrap_and_verdict():
    same = paired_bootstrap("m", [0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert (same.delta, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    rng = np.random.default_rng(0)
    a = rng.random(200)
    better = paired_bootstrap("NDCG@10", a, a + 0.05 + rng.normal(0, 0.01, 200))
    assert better.significant and better.low > 0
    noisy = paired_bootstrap("HR@10", a, a + rng.normal(0, 0.5, 200))
    assert not noisy.significant and noisy.low < 0 < noisy.high
    assert paired_bootstrap("x", [np.nan, 1.0], [0.0, 1.0]).n == 1
    flat = PairedDelta(metric="HR@10", a=0.2, b=0.21, delta=0.01, low=-0.02, high=0.04, n=50)
    assert verdict("p@1", "p@2", [flat]) == ("verdict: no significant difference between p@1 and p@2 (HR@10; "
                                               "95% paired bootstrap)")  # fmt: skip
    up = PairedDelta(metric="NDCG@10", a=0.1, b=0.2, delta=0.1, low=0.05, high=0.15, n=50)
    down = PairedDelta(metric="valid as written", a=1.0, b=0.8, delta=-0.2, low=-0.3, high=-0.1, n=50)
    latency = PairedDelta(metric="plan latency (s)", a=1.0, b=3.0, delta=2.0, low=1.0, high=3.0, n=50)
    line = verdict("p@1", "p@2", [flat, up, down, latency])
    assert line.startswith("verdict: p@2 better on NDCG@10 (p@2 - p@1 +0.100 [+0.050, +0.150]); p@1 better on "
                           "valid as written")  # fmt: skip
    assert "no significant difference on HR@10" in line and "latency" not in line


@pytest.mark.slow
def test_prompt_edit_loop_end_to_end_with_the_embedded_model(user_prompts, ready, tmp_path):
    """new version -> eval -> edit -> eval reruns and says so -> compare with a verdict (one validation user)."""
    runner = CliRunner()
    out = tmp_path / "evals"
    made = runner.invoke(app, ["prompts", "new", "plan_json", "--from", "plan_json@1"])
    assert made.exit_code == 0, made.output
    small = ["--size", "1", "--no-adversarial", "--out", str(out)]
    first = runner.invoke(app, ["eval", "plans", "--prompt", "plan_json@2", *small])
    assert first.exit_code == 0, first.output
    assert "plan_json@2 #" in _flat(first) and "no earlier results for this text" in _flat(first)
    before = get_prompt("plan_json@2").digest
    _edit(user_prompts / "plan_json@2.txt", "Known tags:", "Use a broad scope for sparse histories.\nKnown tags:")
    after = get_prompt("plan_json@2").digest
    rerun = runner.invoke(app, ["eval", "plans", "--prompt", "plan_json@2", *small])
    assert rerun.exit_code == 0, rerun.output
    assert f"#{after}: the text changed since the last run (#{before}); earlier results are not reused" in _flat(rerun)
    assert "abstracts abstract@2" in _flat(rerun) and "already done with this exact text (reused)" in _flat(rerun)
    compared = runner.invoke(app, ["eval", "plans", "--compare", "plan_json@1", "plan_json@2", *small])
    assert compared.exit_code == 0, compared.output
    text = _flat(compared)
    assert "both planned fresh in this run" in text
    assert "verdict: " in text and "plans changed from plan_json@1 to plan_json@2" in text
    assert "downstream accuracy on 1 validation users" in text
    assert len(list((out / "runs").glob("*plan_json-v2-*"))) == 2


def test_recommend_and_chat_runtimes_take_a_prompt_per_role(settings, ready, tmp_path):
    chosen = choose_prompts(["plan@1", "abstract@1"])
    runtime = TandemRuntime.create(settings, "ml-100k", planner="rule", prompts=chosen, progress=False,
                                   store_path=str(tmp_path / "device.sqlite"))  # fmt: skip
    assert runtime.cloud.plan_prompt == "plan@1" and runtime.device.abstract_prompt == "abstract@1"
    assert runtime.device.explain_prompt == "explain@1"
    with pytest.raises(TandemError, match="cloud service plans with its own prompt"):
        TandemRuntime.create(settings, "ml-100k", planner="rule", prompts=chosen, cloud_url="http://127.0.0.1:9",
                             progress=False, store_path=str(tmp_path / "device2.sqlite"))  # fmt: skip


@pytest.mark.parametrize("args", [["eval", "plans", "--compare", "plan_json@1", "abstract@1"],
                                  ["eval", "plans", "--compare", "plan_json@1", "plan_json@1"],
                                  ["eval", "plans", "--prompt", "plan_json@9"],
                                  ["recommend", "--user", "196", "--prompt", "abstract=explain@1"]])  # fmt: skip
def test_bad_prompt_options_fail_before_anything_loads(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, TandemError)

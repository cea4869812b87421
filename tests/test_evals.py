"""The evals people run: the plan scorer (with cases it must flag) and a small `eval rec` on ML-100K."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import TextSpace
from agents.device.encoders import EncoderShelf
from evals.plans import PlanCase, build_suite, score_case, summarise
from evals.rec import fire_at_load, full_ranking_ranks
from evals.rec_plans import PlannedCase, PlanSetting, plan_instances
from evals.rec_queries import with_fidelity
from evals.rec_report import write_report
from evals.rec_suite import RecEval, RecEvalConfig
from graph.runtime import build_device, evaluation_agents
from tests.test_agents_llm import ScriptedChat
from tools.device_store import DeviceStore
from tools.tag_index import ExactTagIndex

GOOD = '{"a": 0.8, "n": 2000, "t": {"Comedy": 5, "Drama": 3, "Romance": 2}, "e": "SASRec", "b": 0.7, "w": "ok"}'
COMPACT = GOOD.replace('"n": 2000', '"n": 500').replace('"b": 0.7', '"b": 0.2')
OUT_OF_RANGE = '{"a": 7, "n": 500, "t": {"Comedy": 3, "Porn": 1, "Drama": 1}, "e": "GPT", "b": 0.2, "w": "x"}'


@pytest.fixture(scope="module")
def device(settings, built_index):
    """A rules-only device (no SLM): `score_case` then scores the scripted planner alone."""
    shelf = EncoderShelf(settings.models_dir, built_index.dataset)
    return build_device(settings, built_index, shelf, DeviceStore(":memory:"), slm=None)


@pytest.fixture(scope="module")
def scripted(built_index):
    """A cloud agent whose planner answers `reply`."""
    ws = built_index

    def cloud(reply: str) -> CloudAgent:
        index = ExactTagIndex(ws.dataset.catalog, ws.semantics.table)
        return CloudAgent(space=TextSpace(ws.semantics), index=index, planner_model=ScriptedChat(replies=[reply]))

    return cloud


def sparse_case(ml100k_splits, clarity: str = "vague", query: str = "something to watch") -> PlanCase:
    inst = ml100k_splits.valid[0]
    return PlanCase(case_id="sparse-x", kind="sparse", clarity=clarity, query=query,
                    history=inst.history[-3:].tolist(), history_ts=inst.history_ts[-3:].tolist())  # fmt: skip


def test_plan_scorer_flags_violations_and_missed_tips(device, scripted, ml100k_splits):
    score = score_case(device, scripted(OUT_OF_RANGE), sparse_case(ml100k_splits))
    assert score.status == "repaired"
    assert {"alpha:range", "encoder:unknown", "tags:unknown_tag"} <= set(score.violations)
    assert "Porn" not in score.plan["tags"] and score.plan["alpha"] == 1.0
    assert score.tips["sparse history -> broad scope"] is False  # 500 candidates for 3 interactions
    assert score.repairs == ["tags:mapped"] and "alpha:range" not in score.repairs  # repair reported apart
    good = score_case(device, scripted(GOOD), sparse_case(ml100k_splits))
    assert good.status == "parsed" and good.violations == []
    assert good.tips["sparse history -> broad scope"] and good.tips["sparse history -> semantic-heavy"]
    missed = score_case(device, scripted(COMPACT), sparse_case(ml100k_splits))
    assert missed.status == "parsed"
    assert missed.tips["sparse history -> broad scope"] is False
    assert missed.tips["sparse history -> semantic-heavy"] is False
    summary = summarise([good, missed])
    assert summary["tip: sparse history -> broad scope"] == 0.5 and summary["valid as written (parsed)"] == 1.0


def test_plan_scorer_audits_adversarial_abstracts(device, scripted, ml100k, ml100k_splits):
    suite = build_suite(ml100k, ml100k_splits, size=2, seed=0)
    kinds = {case.case_id for case in suite if case.kind == "adversarial"}
    assert {"adv-injection", "adv-pii", "adv-long-query", "adv-unknown-ids", "adv-nothing"} <= kinds
    pii = next(case for case in suite if case.case_id == "adv-pii")
    score = score_case(device, scripted("not json at all"), pii)
    assert score.status == "fallback" and score.leakage_score == 1.0 and not score.leaks
    text = json.dumps(score.abstract)
    assert "maria" not in text.lower() and "@mail.com" not in text


def test_rerequest_share_follows_the_load():
    scores = np.linspace(0.0, 1.0, 1000)
    assert fire_at_load(scores, 0.0).sum() == 0
    assert abs(fire_at_load(scores, 0.1).mean() - 0.1) < 0.01
    assert fire_at_load(scores, 1.0).all()


def test_full_ranking_masks_history_and_counts_ties_against(ml100k_splits):
    inst = ml100k_splits.test[0]
    scores = np.zeros((1, 1683), dtype=np.float32)
    scores[0, inst.history] = 5.0  # seen items above the target are masked
    scores[0, inst.target] = 1.0
    scores[0, 1:3] = 1.0  # a tie with the target counts against it (unless those are seen)
    rank = full_ranking_ranks(scores, [inst])[0]
    assert rank == sum(1 for i in (1, 2) if i not in set(inst.history.tolist()) and i != inst.target)


@pytest.mark.slow
def test_small_eval_rec_on_ml100k_writes_report_and_resumes(settings, ready, tmp_path):
    device, clouds = evaluation_agents(settings, ready)
    config = RecEvalConfig(llm_users=2, fidelities=("exact",), load=0.1, seed=0, fewshot=True, max_users=40,
                           bootstrap_samples=200)  # fmt: skip
    evaluation = RecEval(settings, ready, device, clouds, config, progress=False)
    evaluation.cache_dir = tmp_path / "plans"
    report = evaluation.run()
    body = report["modes"]["exact"]
    rows = {r["method"]: r for r in body["main"]}
    assert {"popularity", "SASRec alone", "SURGE alone", "LSC4Rec-style static pipeline", "Tandem"} <= set(rows)
    fewshot_rows = [r for part in body["fewshot"].values() for r in part["rows"]]
    for row in body["main"] + body["ablation"] + fewshot_rows:
        assert all(0.0 <= row[m] <= 1.0 for m in ("HR@5", "NDCG@5", "HR@10", "NDCG@10"))
        assert row["HR@5"] <= row["HR@10"]
    assert rows["SASRec alone"]["HR@10"] > rows["popularity"]["HR@10"]
    assert rows["Tandem"]["users"] == report["meta"]["test_users"] == 40 and rows["Tandem"]["planner"] == "rule"
    assert [r["method"] for r in body["ablation"]][5:] == [f"w/o SP v{i}" for i in range(1, 8)]
    sample = body["sample"]
    assert [r["planner"] for r in sample["rows"] if r["method"] == "Tandem"] == ["rule", "llm"]
    assert sum(sample["plan_status"].values()) == 2
    assert body["sweep"][0]["rerequest_rate"] == 0.0 and body["sweep"][-1]["rerequest_rate"] == 1.0
    json_path, md_path = write_report(report, tmp_path / "results", tmp_path / "reports", "tandem eval rec (test)")
    assert json.loads(json_path.read_text())["meta"]["data"] == "ml-100k"
    text = md_path.read_text()
    assert "### Ablation" in text and "full ranking" in text and "llm" in text
    prompts = report["meta"]["prompts"]  # the sample's prompts are named with their digests
    assert prompts["plan"].startswith(clouds["llm"].plan_prompt + "#") and f"plan {prompts['plan']}" in text
    plots = {p.name for p in (tmp_path / "reports").glob("*.png")}
    assert plots == {f"rec_ml-100k_{name}.png" for name in ("buckets", "ablation", "requests", "headroom")}

    # resume: cached plans are reused and a line torn by an interruption is skipped and redone
    llm_file = next((tmp_path / "plans").glob("*-llm-abstract-exact-*.jsonl"))
    lines = llm_file.read_text().splitlines()
    llm_file.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    keys = {PlannedCase.model_validate_json(lines[0]).key, PlannedCase.model_validate_json(lines[1]).key}
    instances = [i for i in ready.splits.test if f"{i.split}:{i.user}" in keys]
    instances, _ = with_fidelity(instances, "exact", ready.dataset, seed=0)
    cases = plan_instances(device, clouds["llm"], instances, PlanSetting("llm", "exact-q1-test"), "ml-100k",
                           tmp_path / "plans", progress=False)  # fmt: skip
    assert set(cases) == {f"test:{i.user}" for i in instances}
    assert len([line for line in llm_file.read_text().splitlines() if line.endswith("}")]) == 2

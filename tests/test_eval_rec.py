"""`tandem eval rec` that cannot flatter: queries files, leak controls, paired intervals, raw "w/o AG",
short-history few-shot users and model digests, on real ML-100K data and the real agents."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from evals.rec import (
    EvalSet,
    _matrix_scores,
    lexicographic_beta,
    query_tag_ranks,
    structured_scores,
    tag_count_scores,
)
from evals.rec_plans import PlanSetting, plan_instance, raw_abstract
from evals.rec_queries import QueryFileError, load_query_file, with_fidelity
from evals.rec_report import write_report
from evals.rec_suite import RecEval, RecEvalConfig, fewshot_prefixes
from graph.runtime import evaluation_agents
from tools.checkpoints import file_digest
from tools.metrics import paired_bootstrap, per_user
from tools.rule_planner import signals_from_abstract

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def agents(settings, ready):
    return evaluation_agents(settings, ready)


def user_name(ws, inst) -> str:
    return ws.dataset.user_names[inst.user]


# --------------------------------------------------------------------------------------- queries file


def test_queries_file_is_read_with_its_hash(ready, tmp_path):
    first, second = ready.splits.test[0], ready.splits.test[1]
    other = next(i for i in range(1, ready.dataset.catalog.num_items) if i not in set(second.history.tolist()))
    path = tmp_path / "q.jsonl"
    lines = [{"user": user_name(ready, first), "query": "a Comedy please"},
             {"user": user_name(ready, second), "query": "", "target": other}, {},
             {"user": user_name(ready, first), "query": "something else"}]  # fmt: skip
    path.write_text("\n".join("" if not line else json.dumps(line) for line in lines) + "\n")
    loaded = load_query_file(path, ready.dataset, ready.splits)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.mode == f"file-{loaded.sha256[:12]}"
    assert [i.query for i in loaded.instances] == ["a Comedy please", "", "something else"]
    assert loaded.instances[0].target == first.target and loaded.instances[1].target == other
    assert np.array_equal(loaded.instances[1].history, second.history)
    assert len({i.split for i in loaded.instances}) == 3  # the same user twice: two cases, two plan-cache keys


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not JSON"),
        ('{"user": "196"}', "line 2: query: Field required"),
        ('{"user": "196", "query": "x", "mood": 1}', "line 2: mood: Extra inputs"),
        ('{"user": "no-such-user", "query": "x"}', "line 2: unknown user 'no-such-user'"),
        ('{"user": "196", "query": "x", "target": 999999}', "line 2: target 999999 is not a catalog item id"),
    ],
)
def test_queries_file_errors_name_the_line(ready, tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"user": user_name(ready, ready.splits.test[0]), "query": "x"})
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(QueryFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_query_file(path, ready.dataset, ready.splits)


def test_queries_file_refuses_a_target_in_the_history(ready, tmp_path):
    inst = ready.splits.test[0]
    path = tmp_path / "seen.jsonl"
    path.write_text(json.dumps({"user": user_name(ready, inst), "query": "x", "target": int(inst.history[0])}))
    with pytest.raises(QueryFileError, match="line 1: target .* already in user"):
        load_query_file(path, ready.dataset, ready.splits)


def test_cli_bad_queries_file_is_one_line(ready, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user": "no-such-user", "query": "x"}\n')
    done = subprocess.run([sys.executable, "-c", "from tandem.cli import main; main()", "eval", "rec",
                           "--queries", str(path), "--out", str(tmp_path), "--reports", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert "line 1: unknown user 'no-such-user'" in done.stderr.replace("\n", "")
    assert "Traceback" not in done.stderr + done.stdout


# ------------------------------------------------------------------------------------- leak controls


def test_tag_baseline_ranks_more_tags_first_then_sasrec(ready, agents):
    device, clouds = agents
    catalog = ready.dataset.catalog
    instances = [replace(i, query="I'd like a Comedy Romance movie from the 1990s.") for i in ready.splits.test[:12]]
    evalset = EvalSet(instances, catalog.num_items)
    evalset.structured["SASRec"], _ = structured_scores(device.encoders.get("SASRec"), instances)
    abstracts = [device.abstract(i.query, i.history.tolist(), i.history_ts.tolist(), use_model=False).abstract
                 for i in instances]  # fmt: skip
    assert signals_from_abstract(abstracts[0], catalog.tags()).query_tags == ["Comedy", "Romance", "1990s"]
    ranks, named = query_tag_ranks(evalset, abstracts, catalog, device)
    assert named == 1.0
    counts = tag_count_scores(["Comedy", "Romance", "1990s"], catalog)
    for row, inst in enumerate(instances):
        sasrec = evalset.structured["SASRec"][row]
        items = [i for i in range(1, catalog.num_items + 1) if i not in set(inst.masked.tolist())]
        expected = sorted(items, key=lambda i: (-counts[i], -sasrec[i], i))  # lexicographic, by hand
        assert ranks[row] == expected.index(inst.target)
        ranking = device.rank(np.array(items), counts[items], lexicographic_beta(3), inst.masked,
                              lambda c, r=row: _matrix_scores(evalset.structured["SASRec"], r, c))  # fmt: skip
        assert ranking.items[:50].tolist() == expected[:50]


def test_lexicographic_beta_lets_one_tag_outrank_any_sasrec_gap():
    for named in range(1, 8):
        beta = lexicographic_beta(named)
        assert beta / named > 1.0 - beta and beta < 1.0


# ------------------------------------------------------------------------------------ paired bootstrap


def test_paired_bootstrap_properties():
    rng = np.random.default_rng(0)
    a = (rng.random(400) < 0.3).astype(float)
    same = paired_bootstrap(a, a, seed=1)
    assert same.diff == same.low == same.high == 0.0
    better = paired_bootstrap(np.minimum(1.0, a + (rng.random(400) < 0.2)), a, seed=1)
    assert 0.0 < better.low <= better.diff <= better.high
    assert paired_bootstrap(a, 1 - a, seed=7) == paired_bootstrap(a, 1 - a, seed=7)  # seeded
    noisy = rng.random(400)
    wide = paired_bootstrap(noisy[:40], a[:40], seed=1)
    narrow = paired_bootstrap(noisy, a, seed=1)
    assert wide.high - wide.low > narrow.high - narrow.low
    flipped = paired_bootstrap(a, noisy, seed=1)
    assert flipped.diff == pytest.approx(-narrow.diff)
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:10])


def test_per_user_values_average_to_the_metrics():
    ranks = np.array([0, 3, 9, 10, 200])
    assert per_user(ranks, "HR@10").tolist() == [1, 1, 1, 0, 0]
    assert per_user(ranks, "NDCG@10")[0] == 1.0 and per_user(ranks, "NDCG@10")[3] == 0.0


# ---------------------------------------------------------------------------------------- w/o AG, raw


def test_without_ag_the_rule_planner_reads_facts_of_the_raw_history(ready, agents):
    device, clouds = agents
    inst = max(ready.splits.test[:50], key=lambda i: len(i.history))
    abstract = raw_abstract("", inst.history.tolist(), inst.history_ts.tolist(), ready.dataset.catalog)
    signals = signals_from_abstract(abstract, ready.dataset.catalog.tags())
    assert signals.interactions == len(inst.history) > 20
    assert ready.dataset.catalog[int(inst.history[-1])].title in abstract.behavior_summary  # raw, not scrubbed
    case = plan_instance(device, clouds["rule"], inst, PlanSetting("rule", "none", raw_input=True))
    abstracted = plan_instance(device, clouds["rule"], inst, PlanSetting("rule", "none"))
    assert case.plan["encoder"] != "none" and case.plan["encoder"] == abstracted.plan["encoder"]
    assert case.plan["beta"] == abstracted.plan["beta"]  # same facts: the row isolates the abstract's text


# -------------------------------------------------------------------------------- few-shot, fidelities


def test_fewshot_users_are_cut_to_their_first_interactions(ready):
    data, heldout = ready.dataset, ready.splits.heldout_users
    for length in (3, 5, 10):
        cut = fewshot_prefixes(data, heldout, length)
        assert cut and {i.user for i in cut} <= heldout
        for inst in cut:
            seq = data.sequences[inst.user]
            assert len(inst.history) == length and np.array_equal(inst.history, seq[:length])
            assert inst.target == int(seq[length]) and inst.split == f"fewshot{length}"


def test_fidelity_queries_replace_only_the_query(ready):
    instances = ready.splits.test[:30]
    habit, families = with_fidelity(instances, "habit", ready.dataset, seed=0)
    assert all(f.startswith("test-") for f in families)
    moved = [replace(i, target=1) for i in instances]
    assert [i.query for i in with_fidelity(moved, "habit", ready.dataset, seed=0)[0]] == [i.query for i in habit]
    for made, inst in zip(habit, instances, strict=True):
        assert np.array_equal(made.history, inst.history) and made.target == inst.target
    assert all(i.query == "" for i in with_fidelity(instances, "none", ready.dataset, seed=0)[0])


# ------------------------------------------------------------------------------------------- digests


def test_digests_name_every_model_file(settings, ready, agents):
    device, clouds = agents
    digests = RecEval(settings, ready, device, clouds, RecEvalConfig(llm_users=0), progress=False).digests(False)
    assert {"SASRec checkpoint", "SURGE checkpoint", "item embeddings (Eq. 1)"} <= set(digests)
    for entry in digests.values():
        assert len(entry["sha256"]) == 64 and entry["sha256"] == file_digest(Path(entry["path"]))


@pytest.mark.slow
def test_small_eval_rec_has_controls_intervals_fewshot_and_digests(settings, ready, agents, tmp_path):
    device, clouds = agents
    config = RecEvalConfig(llm_users=0, fidelities=("habit",), max_users=60, seed=0, bootstrap_samples=200)
    evaluation = RecEval(settings, ready, device, clouds, config, progress=False)
    evaluation.cache_dir = tmp_path / "plans"
    report = evaluation.run()
    body = report["modes"]["habit"]
    names = [r["method"] for r in body["main"]]
    assert {"SASRec alone", "SASRec + query tags", "semantic + SASRec fixed fusion", "Tandem"} <= set(names)
    versus = {d["versus"] for d in body["differences"]["main"]}
    assert versus == set(names) - {"Tandem"}
    for d in body["differences"]["main"]:
        assert d["HR@10"]["low"] <= d["HR@10"]["diff"] <= d["HR@10"]["high"] and d["HR@10"]["users"] == 60
    assert "Tandem w/o AG" in [r["method"] for r in body["ablation"]]
    oracle = body["headroom"]["rows"][0]
    assert oracle["method"].startswith("oracle plan (upper bound") and oracle["users"] == 60
    v7 = next(r for r in body["ablation"] if r["method"] == "w/o SP v7")  # a fixed plan next to a grid point
    assert oracle["HR@10"] > v7["HR@10"]
    assert set(body["fewshot"]) == {"3", "5", "10"}
    assert "SASRec + query tags" in [r["method"] for r in body["fewshot"]["3"]["rows"]]
    json_path, md_path = write_report(report, tmp_path / "results", tmp_path / "reports", "tandem eval rec (test)")
    saved = json.loads(json_path.read_text())
    assert saved["meta"]["digests"]["SASRec checkpoint"]["sha256"] == file_digest(
        Path(device.encoders.get("SASRec").checkpoint_info["path"]))  # fmt: skip
    text = md_path.read_text()
    assert "fidelity `habit`" in text and "95% CI" in text and "Few-shot users with short histories" in text
    assert all(p.stat().st_size < 150_000 for p in (tmp_path / "reports").glob("*.png"))


def test_the_example_queries_file_loads(ready):
    loaded = load_query_file(ROOT / "evals" / "queries" / "example_ml-100k.jsonl", ready.dataset, ready.splits)
    assert len(loaded.instances) == 6 and loaded.instances[4].query == ""


@pytest.mark.parametrize("won", [False, True])
def test_the_table_shows_both_checkpoints_when_a_cooperative_one_exists(settings, ready, agents, tmp_path,
                                                                        monkeypatch, won):  # fmt: skip
    """A cooperative checkpoint that lost on validation gets its own row (not used); one that won is "SASRec
    alone" and the base checkpoint gets the row "before cooperative tuning"."""
    import evals.rec_suite as rec_suite
    from tools.encoders import build_encoder
    from tools.training import TrainConfig, save_checkpoint

    device, clouds = agents
    other = save_checkpoint(tmp_path / "sasrec-coop.pt", build_encoder("sasrec", ready.dataset.catalog.num_items,
                                                                       dim=16, max_len=20), ready.dataset,
                            TrainConfig())  # fmt: skip
    base = device.encoders.base_path("SASRec")
    decisions = {base: (other, won)}
    monkeypatch.setattr(rec_suite, "cooperative_decision", lambda path: decisions.get(path))
    if won:
        monkeypatch.setattr(device.encoders, "base_path", lambda name, real=device.encoders.base_path:
                            other if name == "SASRec" else real(name))  # fmt: skip
        decisions = {other: (base, True)}  # the shelf's base is now `other`; `base` plays the winning copy
    config = RecEvalConfig(llm_users=0, fidelities=("none",), max_users=12, seed=0, bootstrap_samples=50,
                           fewshot=False, headroom=False)  # fmt: skip
    evaluation = RecEval(settings, ready, device, clouds, config, progress=False)
    evaluation.cache_dir = tmp_path / "plans"
    rows = {r["method"]: r for r in evaluation.run()["modes"]["none"]["main"]}
    extra = "SASRec alone, before cooperative tuning" if won else "SASRec alone, cooperatively tuned (lost on " \
        "validation, not used)"
    assert extra in rows and "SURGE alone, before cooperative tuning" not in rows
    assert rows[extra]["HR@10"] != rows["SASRec alone"]["HR@10"] or rows[extra]["NDCG@10"] != rows["SASRec alone"][
        "NDCG@10"]  # a random 16-wide model next to the trained one

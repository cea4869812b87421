"""Hindsight labels: resumable reward tables on validation items, generalising targets, the learned planner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from agents.cloud.neighbours import (
    NeighbourPlanner,
    abstract_vectors,
    neighbour_choice,
    retrieval_text,
    selection_scores,
)
from evals.hindsight import (
    FIDELITIES,
    Labeller,
    LabelLine,
    derive,
    exemplars_path,
    leave_one_out_neighbours,
    run_labels,
)
from evals.rec import run_pipeline
from graph.runtime import evaluation_agents
from tools.plan_point_answer import PointAnswer, parse_point_answer
from tools.plan_space import PlanPoint
from tools.protocol import Plan


@pytest.fixture(scope="module")
def agents(settings, ready):
    return evaluation_agents(settings, ready)


@pytest.fixture(scope="module")
def labelled(ready, agents, tmp_path_factory):
    device, clouds = agents
    home = tmp_path_factory.mktemp("home")
    summary, folder = run_labels(ready, device, clouds["rule"], home, Console(stderr=True), progress=False,
                                 max_users=12)  # fmt: skip
    return home, summary, folder


def test_labels_are_written_for_people_and_planners(ready, labelled):
    home, summary, folder = labelled
    lines = [LabelLine.model_validate_json(t) for t in (folder / "labels.jsonl").read_text().splitlines()]
    assert len(lines) == 12 * len(FIDELITIES) and {line.fidelity for line in lines} == set(FIDELITIES)
    for line in lines[:5]:
        Plan.model_validate(line.target, context={"known_tags": ready.dataset.catalog.tags()})
        assert line.abstract.startswith("Query: ") and "Facts:" in line.abstract
        assert 0 <= line.reward["own_best_rank"] <= line.reward["target_rank"]
    assert summary["chosen"].startswith("kNN mean") and summary["chosen"] in summary["selection"]
    assert "test items never read" in summary["labelled"]["split"]
    assert json.loads((folder / "selection.json").read_text())["key"] == summary["key"]
    assert exemplars_path(home, "ml-100k").is_file()


def test_a_rerun_resumes_without_rescoring(ready, agents, labelled):
    device, clouds = agents
    home, _, folder = labelled
    chunks = sorted(folder.glob("ranks-*.npz"))
    before = {p: p.stat().st_mtime_ns for p in chunks}
    labeller = Labeller(ready, device, clouds["rule"], home, progress=False, max_users=12)
    labeller.score()
    assert {p: p.stat().st_mtime_ns for p in chunks} == before
    bigger = Labeller(ready, device, clouds["rule"], home, progress=False, max_users=13)
    assert not bigger.chunk_path("none", 0).is_file()  # a run over other users never reuses a chunk


def test_the_reward_table_is_the_pipelines_rank_on_the_validation_item(ready, agents, labelled):
    device, clouds = agents
    home, _, _ = labelled
    labeller = Labeller(ready, device, clouds["rule"], home, progress=False, max_users=12)
    labels = labeller.load()
    evalset, abstracts, _ = labeller._planned("habit")
    from evals.rec import structured_scores

    for name in ("SASRec", "SURGE"):
        evalset.structured[name], _ = structured_scores(device.encoders.get(name), evalset.instances)
    assert all(i.split == "valid" for i in evalset.instances)
    rows = np.arange(12)
    offset = FIDELITIES.index("habit") * 12
    for index in (0, 317, len(labeller.points) - 1):
        plans = [labeller.points[index].plan_for(a, labeller.known) for a in abstracts]
        ranks = run_pipeline(evalset, rows, abstracts, plans, clouds["rule"], device).ranks
        assert labels.ranks[offset : offset + 12, index].tolist() == ranks.tolist()


def test_targets_never_use_the_instance_itself():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    neighbours = leave_one_out_neighbours(vectors, 10)
    assert not (neighbours == np.arange(30)[:, None]).any()
    similarity = vectors @ vectors.T
    assert (np.diff(np.take_along_axis(similarity, neighbours, axis=1), axis=1) <= 1e-6).all()
    ranks = rng.integers(0, 50, size=(30, 7))
    scores = selection_scores(ranks, miss=1683)
    assert neighbour_choice(scores, neighbours[3, :5]) == int(scores[neighbours[3, :5]].mean(axis=0).argmax())

    class Fake:  # only what `derive` reads
        pass

    labels = Fake()
    labels.ranks, labels.miss, labels.vectors = ranks, 1683, vectors
    labels.keys = [f"{('none', 'habit', 'exact')[n // 10]}:u{n % 10}" for n in range(30)]  # 10 users x 3 levels
    from tools.protocol import Abstract

    labels.abstracts = [Abstract(sanitized_query="", behavior_summary="x")] * 30
    derived = derive(labels)
    own = ranks[np.arange(30), derived["kNN mean, k=5"]]
    # a user's rows at its other fidelity levels share its validation item: never its neighbours either
    users = np.array([key.split(":")[1] for key in labels.keys])
    others = leave_one_out_neighbours(vectors, 10, users)
    assert not (users[others] == users[:, None]).any() and others.shape == (30, 10)
    for u in range(30):
        assert derived["kNN mean, k=5"][u] == neighbour_choice(scores, others[u, :5])
        fixed = scores[users != users[u]].sum(axis=0).argmax()  # the fixed point without the user's rows
        assert derived["one best fixed point"][u] == fixed
    assert own.shape == (30,)


def test_the_learned_planner_plans_from_the_labels(ready, agents, labelled):
    device, clouds = agents
    home, summary, _ = labelled
    planner = NeighbourPlanner.load(exemplars_path(home, "ml-100k"))
    assert planner.k == summary["k"] and len(planner.points) == planner.scores.shape[1]
    abstract = device.abstract("a funny movie", ready.splits.test[0].history, ready.splits.test[0].history_ts,
                               use_model=False).abstract  # fmt: skip
    result = planner.plan(abstract, ready.dataset.catalog.tags(), clouds["rule"].space)
    assert result.status == "learned" and PlanPoint.of_plan(result.plan) in planner.points
    assert "nearest labelled abstracts" in result.plan.explanations.semantic
    # the ranking behind plan_exemplars@4: best first, its first point the planner's choice, each a neighbour mean
    vector = abstract_vectors([abstract], clouds["rule"].space)[0]
    ranked = planner.ranked(vector, 5)
    means = planner.scores[planner.neighbours(vector)].mean(axis=0)
    rewards = [reward for _, reward in ranked]
    assert ranked[0] == planner.choose(vector) and rewards == sorted(rewards, reverse=True)
    assert all(abs(means[planner.points.index(point)] - reward) < 1e-6 for point, reward in ranked)


def test_neighbours_are_found_by_the_query_and_the_facts_not_the_slm_prose(ready, agents):
    device, clouds = agents
    inst = ready.splits.valid[0]
    rule = device.abstract("", inst.history, inst.history_ts, use_model=False).abstract
    prose = f"a dense history that leans to horror. {rule.behavior_summary}"
    written = rule.model_copy(update={"behavior_summary": prose})
    assert retrieval_text(written) == retrieval_text(rule) == rule.as_text()  # labels are rule-built: facts only
    space = clouds["rule"].space
    assert np.allclose(abstract_vectors([written], space), abstract_vectors([rule], space))
    queried = rule.model_copy(update={"sanitized_query": "something funny"})
    assert retrieval_text(queried).startswith("Query: something funny. Behavior: Facts:")
    no_facts = rule.model_copy(update={"behavior_summary": "a short history of comedies"})
    assert retrieval_text(no_facts).endswith("Behavior: a short history of comedies")


def test_exemplars_are_built_and_retrieved_as_few_shot_examples(ready, agents, labelled, monkeypatch):
    from dataclasses import replace

    from typer.testing import CliRunner

    from agents.cloud.planner import render_plan_prompt
    from graph.runtime import EXEMPLARS_PROMPT, LazyExemplars, served_plan_prompt
    from ground.settings import get_settings
    from tandem.cli import app
    from tools.exemplar_index import ExemplarIndex
    from tools.tag_index import chroma_client

    device, clouds = agents
    home, summary, _ = labelled
    monkeypatch.setenv("TANDEM_HOME", str(home))
    get_settings.cache_clear()
    try:
        before = LazyExemplars(get_settings(), "ml-100k")  # labels only: the ranking prompt needs no collection
        assert before.serves(EXEMPLARS_PROMPT) and not before.available() and not before.serves("plan_exemplars@3")
        built = CliRunner().invoke(app, ["prompts", "exemplars", "build", "--data", "ml-100k"])
        assert built.exit_code == 0, built.output
        assert f"{12 * len(FIDELITIES)} plan exemplars" in built.output
        listed = CliRunner().invoke(app, ["prompts", "exemplars", "list", "--data", "ml-100k"])
        assert "plan_exemplars@1" in listed.output and summary["key"] in listed.output
        index = ExemplarIndex(chroma_client(None, get_settings().chroma_dir), "ml-100k")
        # a language-model cloud on the default prompt serves retrieved exemplars where they exist, nowhere else
        labelled_home = replace(clouds["llm"], exemplars=LazyExemplars(get_settings(), "ml-100k"))
        assert served_plan_prompt(labelled_home, "plan_json@1") == EXEMPLARS_PROMPT == "plan_exemplars@4"
        assert served_plan_prompt(labelled_home, "plan_exemplars@1") == "plan_exemplars@1"  # asked for: kept
        elsewhere = replace(clouds["llm"], exemplars=LazyExemplars(get_settings(), "ml-1m"))
        assert served_plan_prompt(elsewhere, "plan_json@1") == "plan_json@1"
        ranking_home = replace(labelled_home, plan_prompt="plan_exemplars@4")
        assert ranking_home.exemplar_source() == f"ranking-hindsight-{summary['key']}-k{summary['k']}-facts"
        with pytest.raises(Exception, match="plans label"):  # a data set without labels: the command to run
            replace(elsewhere, plan_prompt="plan_exemplars@4").exemplar_source()
    finally:
        get_settings.cache_clear()
    cloud = replace(clouds["llm"], exemplars=index.nearest)
    inst = ready.splits.valid[3]
    abstract = device.abstract("", inst.history, inst.history_ts, use_model=False).abstract
    examples = cloud.nearest_exemplars(abstract, 3)
    assert len(examples) == 3 and examples[0]["abstract"] == abstract.as_text()  # the same labelled abstract
    assert set(examples[0]["plan"]) == {"a", "n", "t", "e", "b", "w"}
    text = render_plan_prompt(abstract, ready.dataset.catalog.tags(), "plan_exemplars@1", cloud.nearest_exemplars)
    assert text.count("User abstract:") == 4 and examples[1]["abstract"] in text
    with pytest.raises(Exception, match="exemplars build"):
        render_plan_prompt(abstract, ready.dataset.catalog.tags(), "plan_exemplars@1", None)

    # plan_exemplars@2: the same exemplars, nearest LAST, shown as plan-space points; the real embedded model
    # answers one point under the point grammar
    text = render_plan_prompt(abstract, ready.dataset.catalog.tags(), "plan_exemplars@2", cloud.nearest_exemplars)
    shots = text.split("User abstract: ")[1:]
    assert len(shots) == 4 and shots[2].startswith(abstract.as_text()) and shots[0].startswith(examples[2]["abstract"])
    nearest = PointAnswer.of_compact(examples[0]["plan"]).text()
    assert f"Plan: {nearest}\n" in shots[2] and '"t"' not in text  # points, not compact plans
    result = replace(cloud, plan_prompt="plan_exemplars@2").plan(abstract)
    assert result.status == "parsed" and result.prompt == "plan_exemplars@2", result
    assert parse_point_answer(result.raw_text).point().plan_for(abstract, ready.dataset.catalog.tags()).tags == \
        result.plan.tags  # the rule planner's tags for the model's point
    # plan_exemplars@3: the grammar admits only the points shown, so the real model picks one of them
    chosen = replace(cloud, plan_prompt="plan_exemplars@3").plan(abstract)
    assert chosen.status == "parsed" and chosen.prompt == "plan_exemplars@3", chosen
    assert parse_point_answer(chosen.raw_text) in {PointAnswer.of_compact(e["plan"]) for e in examples}
    # plan_exemplars@4: the real model chooses one of the 3 best points of the nearest labelled abstracts
    ranked = ranking_home.plan(abstract)
    offered = {PointAnswer.of_point(p) for p, _ in ranking_home.ranked_points(abstract, 3)}
    assert ranked.status == "parsed" and ranked.prompt == "plan_exemplars@4", ranked
    assert len(offered) == 3 and parse_point_answer(ranked.raw_text) in offered

"""The plan executor ranks exactly as `tandem eval rec` (and so the graph) does, for any plan and user."""

from __future__ import annotations

import numpy as np
import pytest

from evals.plan_pieces import executor_for, instance_pieces
from evals.rec import EvalSet, planned, run_pipeline, structured_scores
from evals.rec_plans import PlanSetting, plan_instances
from evals.rec_queries import fidelity_mode, with_fidelity
from graph.runtime import evaluation_agents
from tools.fusion import rank_step
from tools.plan_space import DEFAULT_SPACE, PlanPoint
from tools.rule_planner import rule_tags, signals_from_abstract


@pytest.fixture(scope="module")
def agents(settings, ready):
    return evaluation_agents(settings, ready)


@pytest.fixture(scope="module", params=["none", "habit"])
def bench(request, settings, ready, agents, tmp_path_factory):
    device, clouds = agents
    instances, _ = with_fidelity(ready.splits.valid[:25], request.param, ready.dataset, settings.seed, "dev")
    evalset = EvalSet(list(instances), ready.dataset.catalog.num_items)
    for name in ("SASRec", "SURGE"):
        evalset.structured[name], _ = structured_scores(device.encoders.get(name), instances)
    rows = np.arange(len(instances))
    setting = PlanSetting("rule", fidelity_mode(request.param, "dev"))
    cases = plan_instances(device, clouds["rule"], instances, setting, "ml-100k", tmp_path_factory.mktemp("plans"),
                           progress=False)  # fmt: skip
    abstracts, rule_plans = planned(cases, evalset, rows)
    pieces = instance_pieces(evalset, rows, abstracts, clouds["rule"], DEFAULT_SPACE.alphas)
    return evalset, rows, abstracts, rule_plans, pieces, executor_for(evalset, ready.dataset.catalog)


def test_executor_rank_equals_eval_rec_rank_for_the_same_plan_and_user(ready, agents, bench):
    device, clouds = agents
    evalset, rows, abstracts, rule_plans, pieces, executor = bench
    known = ready.dataset.catalog.tags()
    points = DEFAULT_SPACE.points()
    table = np.stack([executor.rank_points(p, points, lambda k, n, a=a: rule_tags(signals_from_abstract(a, known),
                                                                                   known, k, n))
                      for p, a in zip(pieces, abstracts, strict=True)])  # fmt: skip
    assert table.shape == (len(rows), len(points))
    picked = np.random.default_rng(0).choice(len(points), size=8, replace=False).tolist()
    picked += [points.index(PlanPoint(0.6, 20, 5000, "SASRec", 0.0)), points.index(PlanPoint(1.0, 3, 500, "none", 1.0))]
    for index in picked:
        plans = [points[index].plan_for(a, known) for a in abstracts]
        expected = run_pipeline(evalset, rows, abstracts, plans, clouds["rule"], device).ranks
        assert table[:, index].tolist() == expected.tolist(), points[index]
        assert [executor.rank(p, plan) for p, plan in zip(pieces, plans, strict=True)] == expected.tolist()
    # a plan off the grid (the rule planner's own alpha, e.g. 0.6 or 0.85) is scored the same way
    expected = run_pipeline(evalset, rows, abstracts, rule_plans, clouds["rule"], device).ranks
    assert [executor.rank(p, plan) for p, plan in zip(pieces, rule_plans, strict=True)] == expected.tolist()
    assert (expected < evalset.miss_rank()).any() and (table.min(axis=1) <= expected).all()


def test_executor_candidates_are_the_clouds_eq3_candidates(ready, agents, bench):
    _, clouds = agents
    _, _, abstracts, rule_plans, pieces, executor = bench
    answers = clouds["rule"].semantic_batch(abstracts[:5], rule_plans[:5])
    for p, plan, answer in zip(pieces, rule_plans, answers, strict=False):
        ids, scores = executor.candidates(p, plan.alpha, plan.tags)
        assert sorted(answer.candidates.tolist()) == ids.tolist()
        assert dict(zip(answer.candidates.tolist(), answer.scores.tolist(), strict=True)) == dict(
            zip(ids.tolist(), scores.tolist(), strict=True))  # fmt: skip


def test_rank_step_without_disagreement_orders_the_same():
    rng = np.random.default_rng(1)
    candidates = rng.choice(np.arange(1, 500), size=200, replace=False)
    semantic, structured = rng.random(200), rng.random(600)
    full = rank_step(candidates, semantic, 0.3, [candidates[0]], lambda c: structured[c])
    fast = rank_step(candidates, semantic, 0.3, [candidates[0]], lambda c: structured[c], disagreement=False)
    assert full.items.tolist() == fast.items.tolist() and np.isnan(fast.inconsistency)
    assert not np.isnan(full.inconsistency)

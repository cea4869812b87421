"""The headroom rows of `tandem eval rec`: how much better any plan could be, and how much a learned planner takes.

Per query fidelity level, on the same test users as the rule-planner rows:
- "oracle plan (upper bound, not a claim)": for each user, the point of the discretised plan space
  (`tools.plan_space`) that ranks the user's TEST item best, found by the plan executor
  (`tools.plan_executor`) and then run through the pipeline like every other row. It reads the test item, so
  it is a ceiling that shows every planner's headroom, never a result;
- "Tandem" with the learned planner (`knn`): the nearest labelled validation abstracts' hindsight-best
  point (`agents.cloud.neighbours`), planned from the same rule-built abstracts as the rule planner's row, with
  LSC4Rec's re-request at the same load;
- "best fixed plan (validation)": the one point with the best mean hindsight reward over all labelled
  validation instances (every fidelity level pooled), the same for every user.
The learned and fixed rows need `tandem plans label` for the data set; without it only the oracle is shown.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
from rich.progress import track

from agents.cloud.neighbours import NeighbourPlanner
from evals.hindsight import label_key
from evals.plan_pieces import executor_for, instance_pieces
from evals.rec import EvalSet, RowResult, fire_at_load, planned, run_pipeline
from evals.rec_plans import PlanSetting
from tools.plan_space import DEFAULT_SPACE, PlanPoint, PlanSpace
from tools.protocol import Abstract
from tools.rule_planner import rule_tags, signals_from_abstract

ORACLE = "oracle plan (upper bound, not a claim)"
FIXED = "best fixed plan (validation)"
LEARNED_PLANNER = "knn"


def oracle_ranks(evalset: EvalSet, rows: np.ndarray, abstracts: list[Abstract], cloud,
                 catalog, space: PlanSpace = DEFAULT_SPACE, cache: Path | None = None,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each user's best point (by the rank of its own target) and the rank table [N, P] it was chosen from.

    With `cache` (a file named by data, split, query mode, plan space and model digests) the table is read
    back when it holds every one of these instances (user, target and abstract, so another query never reuses
    it), and written after it is computed."""
    keys = np.array([_instance_key(evalset.instances[r], a) for r, a in zip(rows.tolist(), abstracts, strict=True)])
    if cache is not None and cache.is_file():
        with np.load(cache) as saved:
            where = {key: n for n, key in enumerate(saved["keys"].tolist())}
            if all(key in where for key in keys.tolist()):  # these instances (or a sample of them) were scored
                table = saved["ranks"][[where[key] for key in keys.tolist()]]
                return table.argmin(axis=1), table
    executor = executor_for(evalset, catalog)
    known = catalog.tags()
    points = space.points()
    table = np.empty((len(rows), len(points)), dtype=np.int32)
    steps = range(0, len(rows), 128)
    for begin in track(steps, description="oracle plans (plan space per user)") if progress else steps:
        part = rows[begin : begin + 128]
        chunk = abstracts[begin : begin + 128]
        pieces = instance_pieces(evalset, part, chunk, cloud, space.alphas)
        for n, (p, abstract) in enumerate(zip(pieces, chunk, strict=True)):
            signals = signals_from_abstract(abstract, known)
            table[begin + n] = executor.rank_points(p, points, lambda k, s, g=signals: rule_tags(g, known, k, s))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez_compressed(tmp, keys=keys, ranks=table)
        os.replace(tmp, cache)
    return table.argmin(axis=1), table


def _instance_key(inst, abstract: Abstract) -> str:
    text = hashlib.sha256(abstract.as_text().encode()).hexdigest()[:16]
    return f"{inst.split}:{inst.user}:{inst.target}:{text}"


def oracle_cache(ev, mode: str, split: str, space: PlanSpace = DEFAULT_SPACE) -> Path:
    """Where the oracle's rank table of one query mode is kept (keyed like the hindsight labels)."""
    name = f"{ev.ws.dataset.name}-{split}-{mode}-{label_key(ev.device, ev.cloud, space)}.npz"
    return ev.cache_dir.parent / "oracle" / name  # beside the plan cache ($TANDEM_HOME/evals/oracle)


def headroom(ev, test: EvalSet, rows: np.ndarray, mode: str, abstracts: list[Abstract], tandem_rule: RowResult,
             base: list[RowResult]) -> tuple[dict, list[RowResult]]:  # fmt: skip
    """The headroom table of one fidelity level (see the module docstring) and its rows (for the sample table)."""
    catalog = ev.ws.dataset.catalog
    points = DEFAULT_SPACE.points()
    split = test.instances[int(rows[0])].split if len(rows) else "none"
    best, table = oracle_ranks(test, rows, abstracts, ev.cloud, catalog,
                               cache=oracle_cache(ev, mode, split), progress=ev.progress)  # fmt: skip
    plans = [points[b].plan_for(a, ev.known, "oracle: best point for the test item") for b, a in
             zip(best.tolist(), abstracts, strict=True)]  # fmt: skip
    run = run_pipeline(test, rows, abstracts, plans, ev.cloud, ev.device)
    # The executor ranks exactly as the pipeline; the row reports the pipeline's ranks, and any user where the two
    # differ is counted and shown, not hidden. Seen once on ML-100K (1 of 849 users, one position: two copies of
    # one film at a tag group's cut-off); the cause found since, BLAS scoring identical rows differently by
    # position, is mended by `tools.exact_scores` (RETRIEVAL_VERSION 3), but that case was not replayed.
    disagree = int((run.ranks != table[np.arange(len(rows)), best]).sum())
    if disagree:
        ev.console.print(f"[yellow]warning: the plan executor and the pipeline disagree on {disagree} of {len(rows)} "
                         f"oracle ranks ({mode}); the oracle row reports the pipeline's[/]")  # fmt: skip
    oracle = RowResult(ORACLE, "oracle", run.ranks, float(run.ms.mean()), 1.0,
                       f"best of {len(points)} plan-space points per user, chosen WITH the test item")  # fmt: skip
    sasrec = next(r for r in base if r.name == "SASRec alone")
    out_rows = [oracle]
    notes = {"space": DEFAULT_SPACE.describe(), "executor_disagreements": disagree}
    learned = ev.clouds.get(LEARNED_PLANNER)
    if learned is not None and learned.learned is not None:
        planner: NeighbourPlanner = learned.learned
        knn, plans = learned_row(ev, test, rows, mode, abstracts, learned)
        fixed_point = planner.points[int(np.argmax(planner.scores.mean(axis=0)))]
        fixed = [fixed_point.plan_for(a, ev.known, "best fixed point on validation") for a in abstracts]
        fixed_run = run_pipeline(test, rows, abstracts, fixed, ev.cloud, ev.device)
        fixed_row = RowResult(FIXED, "fixed", fixed_run.ranks, float(fixed_run.ms.mean()), 1.0, fixed_point.label)
        out_rows += [knn, fixed_row]
        notes["learned_distinct_plans"] = len({PlanPoint.of_plan(p) for p in plans})
        notes["fixed_point"] = fixed_point.label
    rows_out = [*out_rows, tandem_rule, sasrec]
    differences = ev.differences(oracle, [tandem_rule, sasrec])
    if len(out_rows) > 1:
        differences += ev.differences(out_rows[1], [tandem_rule, sasrec, out_rows[2]])
    return {"rows": [r.as_row() for r in rows_out], "differences": differences, **notes}, out_rows


def learned_row(ev, test: EvalSet, rows: np.ndarray, mode: str, abstracts: list[Abstract],
                cloud) -> tuple[RowResult, list]:  # fmt: skip
    """Tandem with the learned planner, planned from the same rule-built abstracts as the rule planner's row, with
    LSC4Rec's re-request at the same load (the fired users planned again from the abstract of their newest
    interactions, as `RecEval.tandem` does; the abstracts come from the rule planner's plan cache)."""
    start = time.perf_counter()
    plans = [cloud.plan(a).plan for a in abstracts]
    plan_ms = (time.perf_counter() - start) * 1000.0 / max(1, len(abstracts))
    first = run_pipeline(test, rows, abstracts, plans, ev.cloud, ev.device)
    fired = fire_at_load(first.inconsistency, ev.config.load)
    ranks, ms = first.ranks.copy(), first.ms + plan_ms
    if fired.any():
        recent = ev.plans(test, rows[fired], PlanSetting("rule", mode, recent_only=True))
        recent_abstracts, _ = planned(recent, test, rows[fired])
        again = run_pipeline(test, rows[fired], recent_abstracts, [cloud.plan(a).plan for a in recent_abstracts],
                             ev.cloud, ev.device)  # fmt: skip
        ranks[fired], ms[fired] = again.ranks, ms[fired] + again.ms + plan_ms
    note = (f"re-request at load {ev.config.load:g}; {cloud.learned.k} nearest labelled validation abstracts "
            f"({cloud.learned.source})")  # fmt: skip
    return RowResult("Tandem", LEARNED_PLANNER, ranks, float(ms.mean()), 1.0 + float(fired.mean()), note), plans

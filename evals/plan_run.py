"""One `tandem eval plans` invocation: suite, frozen abstracts, one prompt (resumable) or two (compared
fresh), downstream accuracy next to the rule planner, paired intervals, a verdict, and the files written.

Everything is written under `out` (default `<TANDEM_HOME>/evals/plans`, never the installed package):
- `abstracts/`  the frozen abstracts, one file per (data, abstract prompt digest, device model);
- `runs/`       one prompt's case scores, one file per (data, plan prompt digest, abstract prompt digest,
                output mode, models): reused by a later run of the same text, never by an edited one;
- `compare/`    the case scores of a comparison (rewritten by each comparison: both sides are fresh);
- `reports/`    the summary JSON of the run (tables, intervals, changed cases, verdict).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from agents.cloud.agent import CloudAgent
from agents.device.agent import DeviceAgent
from agents.prompt_roles import role_of
from evals.jsonl import JsonlAppender
from evals.paired import paired_bootstrap
from evals.plan_accuracy import AccuracyBench, per_user
from evals.plan_compare import case_metrics, changed_plans, delta_table, paired_deltas, run_compare, verdict
from evals.plan_suite import build_suite
from evals.plans import (
    CaseScore,
    abstracts_path,
    comparison_table,
    freeze_abstracts,
    model_label,
    results_path,
    run_plan_eval,
    summarise,
)
from ground.errors import TandemError
from ground.files import write_json
from prompts import get_prompt
from tools.protocol import Abstract
from tools.workspace import Workspace


@dataclass(frozen=True)
class PlanEvalConfig:
    """What to evaluate: one planning prompt (`cloud.plan_prompt`) or two (`compare`), on which suite."""

    size: int = 200
    seed: int = 0
    structured: bool = True
    compare: tuple[str, str] | None = None
    accuracy: bool = True
    adversarial: bool = True
    progress: bool = True


def plan_out_dir(home: Path) -> Path:
    """The default output folder: under TANDEM_HOME, never inside the installed package."""
    return home / "evals" / "plans"


def run_plan_evals(
    ws: Workspace, device: DeviceAgent, clouds: dict[str, CloudAgent], config: PlanEvalConfig, out: Path,
    console: Console, command: str = "tandem eval plans",
) -> dict:
    """Run the plan eval described by `config` and return (and write) its report."""
    data = ws.dataset.name
    base = replace(clouds["llm"], structured_output=config.structured)
    refs = plan_refs(config.compare) if config.compare else [get_prompt(base.plan_prompt).ref]
    suite = build_suite(ws.dataset, ws.splits, size=config.size, seed=config.seed, adversarial=config.adversarial)
    regular = sum(c.target is not None for c in suite)
    console.print(f"suite: {len(suite)} cases ({regular} validation users, {len(suite) - regular} adversarial), "
                  f"seed {config.seed}; abstracts by {device.abstract_prompt}, frozen", highlight=False,
                  soft_wrap=True)  # fmt: skip
    frozen = freeze_abstracts(device, suite, abstracts_path(out, data, device), console, config.progress)
    clouds_by_ref = {ref: replace(base, plan_prompt=ref) for ref in refs}
    if config.compare:
        a, b = refs
        if get_prompt(a).digest == get_prompt(b).digest:
            console.print(f"[yellow]note:[/] {a} and {b} have the same text (#{get_prompt(a).digest})")
        console.print(f"{a} vs {b}: both planned fresh in this run, same frozen abstracts, alternating order",
                      highlight=False, soft_wrap=True)  # fmt: skip
        scores_a, scores_b = run_compare(clouds_by_ref[a], clouds_by_ref[b], suite, frozen, config.progress)
        columns = {a: scores_a, b: scores_b}
        path = out / "compare" / f"{data}-{get_prompt(a).key}-vs-{get_prompt(b).key}-{_mode(config)}.jsonl"
        path.unlink(missing_ok=True)
        with JsonlAppender(path) as sink:
            for score in scores_a + scores_b:
                sink.write(score)
    else:
        (ref,) = refs
        path = results_path(out, data, device, clouds_by_ref[ref])
        columns = {ref: run_plan_eval(clouds_by_ref[ref], suite, frozen, path, console, config.progress)}
    console.print(f"case results: {path}", highlight=False, soft_wrap=True)
    timed_out = sum(s.timed_out for scores in columns.values() for s in scores)
    if timed_out:
        console.print(f"[yellow]warning:[/] {timed_out} planning call(s) hit the model's timeout: those cases' "
                      "validity and tips reflect the machine's load, not the prompt", highlight=False,
                      soft_wrap=True)  # fmt: skip
    console.print(comparison_table(columns, f"plan eval ({_mode(config)}, {len(suite)} cases)"))

    report: dict = {
        "command": command, "data": data,
        "suite": {"cases": len(suite), "validation_users": regular, "adversarial": len(suite) - regular,
                  "size": config.size, "seed": config.seed, "split": "valid"},
        "abstract_prompt": get_prompt(device.abstract_prompt).ident, "structured": config.structured,
        "models": {"planner": model_label(base.planner_model), "device": model_label(device.abstract_model)},
        "prompts": {ref: get_prompt(ref).ident for ref in refs},
        "summaries": {ref: summarise(scores) for ref, scores in columns.items()}, "timed_out": timed_out,
    }  # fmt: skip
    target = clouds.get("knn")
    accuracy = _accuracy(device, clouds["rule"], suite, frozen, columns, console, target) if config.accuracy else None
    if accuracy is not None:
        report["accuracy"] = accuracy
    if config.compare:
        a, b = refs
        per_a, per_b = case_metrics(columns[a]), case_metrics(columns[b])
        if accuracy is not None:
            per_a |= {m: np.array(v) for m, v in accuracy["per_user"][a].items()}
            per_b |= {m: np.array(v) for m, v in accuracy["per_user"][b].items()}
        deltas = paired_deltas(per_a, per_b, seed=config.seed)
        console.print(delta_table(f"{b} - {a} (paired; * = interval excludes 0)", a, b, deltas))
        changes = changed_plans(columns[a], columns[b])
        console.print(f"[bold]{len(changes)} of {len(suite)} plans changed[/] from {a} to {b}", highlight=False,
                      soft_wrap=True)  # fmt: skip
        for case_id, what in changes:
            console.print(f"  {case_id}: {what}", highlight=False, soft_wrap=True)
        line = verdict(a, b, deltas)
        console.print(f"[bold]{line}[/]", highlight=False, soft_wrap=True)
        report |= {"deltas": [d.model_dump() for d in deltas], "changed": [list(c) for c in changes],
                   "verdict": line}  # fmt: skip
    if accuracy is not None:
        accuracy.pop("per_user")
    keys = "-vs-".join(get_prompt(ref).key for ref in refs)
    report_path = out / "reports" / f"{data}-{keys}-{_mode(config)}.json"
    write_json(report_path, report)
    console.print(f"report: {report_path}", highlight=False, soft_wrap=True)
    return report


def _mode(config: PlanEvalConfig) -> str:
    return "structured" if config.structured else "free"


def plan_refs(specs: tuple[str, str]) -> list[str]:
    """The two planning prompts of `--compare`, checked (one clear line when either is not a planning prompt)."""
    refs = []
    for spec in specs:
        template = get_prompt(spec)  # unknown -> one clear line
        if role_of(template) != "plan":
            raise TandemError(f"--compare takes two planning prompts; {template.ref} is an {role_of(template)} "
                              f"prompt (choose it with --prompt {template.ref})")  # fmt: skip
        refs.append(template.ref)
    if refs[0] == refs[1]:
        raise TandemError(f"--compare needs two different prompts, got {refs[0]} twice")
    return refs


TARGET = "hindsight target (kNN)"


def _accuracy(
    device: DeviceAgent, rule_cloud: CloudAgent, suite: list, frozen: dict, columns: dict[str, list[CaseScore]],
    console: Console, target_cloud: CloudAgent | None = None,
) -> dict:
    """HR@10 / NDCG@10 of each prompt's plans and of the rule planner's, on the same validation users; with
    hindsight labels (`target_cloud`, the learned planner), each planner's regret: the NDCG@10 its plans lose
    against the hindsight target plan of the same frozen abstract (the plan-space point with the best mean
    validation reward over the nearest labelled abstracts), with a paired interval."""
    bench = AccuracyBench(device, rule_cloud, suite)
    abstracts = {key: frozen[key].abstract for key in bench.keys()}
    rule = {key: rule_cloud.plan(Abstract.model_validate(abstracts[key])).plan.model_dump() for key in bench.keys()}
    per = {"rule planner": per_user(bench.ranks(abstracts, rule))}
    for ref, scores in columns.items():
        plans = {s.case_key: s.plan for s in scores}
        per[ref] = per_user(bench.ranks(abstracts, plans))
    regret: dict[str, dict] = {}
    if target_cloud is not None:
        targets = {key: target_cloud.plan(Abstract.model_validate(abstracts[key])).plan.model_dump()
                   for key in bench.keys()}  # fmt: skip
        best = per_user(bench.ranks(abstracts, targets))
        for name, values in per.items():
            regret[name] = paired_bootstrap("NDCG@10", values["NDCG@10"], best["NDCG@10"]).model_dump()
        per[TARGET] = best
    table = Table(title=f"downstream accuracy on {len(bench.cases)} validation users (same frozen abstracts; "
                        "full ranking, history masked, first pass)")  # fmt: skip
    columns_shown = ["planner", "HR@10", "NDCG@10", "HR@10 - rule [95% CI]", "NDCG@10 - rule [95% CI]"]
    if regret:
        columns_shown.append("NDCG@10 regret vs hindsight target [95% CI]")
    for column in columns_shown:
        table.add_column(column, justify="left" if column == "planner" else "right")
    rows = {}
    for name, values in per.items():
        row = {m: float(v.mean()) if len(v) else float("nan") for m, v in values.items()}
        cells = [f"{row['HR@10']:.3f}", f"{row['NDCG@10']:.3f}"]
        if name != "rule planner":
            for metric in ("HR@10", "NDCG@10"):
                delta = paired_bootstrap(metric, per["rule planner"][metric], values[metric])
                row[f"{metric} - rule"] = delta.model_dump()
                cells.append(delta.text() + (" *" if delta.significant else ""))
        else:
            cells += ["", ""]
        if name in regret:
            row["regret NDCG@10"] = regret[name]
            r = regret[name]
            cells.append(f"{r['delta']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]")
        elif regret:
            cells.append("")
        rows[name] = row
        table.add_row(name, *cells)
    console.print(table)
    return {"users": len(bench.cases), "rows": rows,
            "per_user": {name: {m: v.tolist() for m, v in values.items()} for name, values in per.items()}}  # fmt: skip

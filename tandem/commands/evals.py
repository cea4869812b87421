"""`tandem eval plans` and `tandem eval rec`: the evals prompt engineers and researchers run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from ground.errors import TandemError
from ground.settings import get_settings
from tandem.views import safe

eval_app = typer.Typer(help="Evaluate plans and recommendation accuracy.", no_args_is_help=True)
console = Console()
RESULTS_DIR = Path("evals/results")
REPORTS_DIR = Path("evals/reports")


@eval_app.command("plans")
def plans(
    data: Annotated[str, typer.Option("--data", "-d", help="Data set the suite is drawn from.")] = "ml-100k",
    prompt: Annotated[str, typer.Option(help="Planning prompt NAME@VERSION.")] = "plan_json@1",
    compare: Annotated[tuple[str, str] | None, typer.Option(help="Two prompts to compare: A B.")] = None,
    size: Annotated[int, typer.Option(help="Regular cases in the suite (plus 5 adversarial).")] = 24,
    free: Annotated[bool, typer.Option(help="Do not enforce the JSON schema (raw prompt validity).")] = False,
    seed: Annotated[int, typer.Option(help="Suite seed.")] = 0,
) -> None:
    """Score plan validity, decision tips, leakage, latency and tokens for one or two prompt versions."""
    from evals.jsonl import write_json  # deferred: loads the agents (see `tandem.cli`)
    from evals.plans import (
        build_suite,
        changed_cases,
        comparison_table,
        results_path,
        run_plan_eval,
        summarise,
    )
    from graph.runtime import evaluation_agents
    from prompts import get_prompt
    from tools.workspace import Workspace

    prompts = list(compare) if compare else [prompt]
    refs = [get_prompt(p).ref for p in prompts]  # unknown name or version -> one clear line
    settings = get_settings()
    ws = Workspace(settings, data)
    device, clouds = evaluation_agents(settings, ws)
    suite = build_suite(ws.dataset, ws.splits, size=size, seed=seed)
    columns = {}
    for ref in refs:
        path = results_path(ws.dataset.name, ref, structured=not free)
        cloud = replace(clouds["llm"], plan_prompt=ref, structured_output=not free)
        columns[ref] = run_plan_eval(device, cloud, suite, path)
        write_json(path.with_suffix(".summary.json"), {"prompt": ref, "structured": not free,
                                                        "cases": len(columns[ref]), **summarise(columns[ref])})
        console.print(safe(f"results: {path}"))
    console.print(comparison_table(columns))
    if len(refs) == 2:
        changes = changed_cases(columns[refs[0]], columns[refs[1]])
        console.print(Text.assemble((f"{len(changes)} case(s) changed", "bold"), safe(f" from {refs[0]} to {refs[1]}")))
        for case_id, before, after in changes:
            console.print(safe(f"  {case_id}: {before}  ->  {after}"))


@eval_app.command("rec")
def rec(
    data: Annotated[str, typer.Option("--data", "-d", help="ml-100k (quick) or ml-1m (the papers' tables).")] = (
        "ml-100k"
    ),
    llm_users: Annotated[int, typer.Option(help="Seeded test users planned by the language models (0 = none).")] = 300,
    fidelity: Annotated[str, typer.Option(help="Query fidelity levels: exact, partial, habit, none (comma list).")] = (
        "none,habit,partial,exact"
    ),
    llm_fidelity: Annotated[str, typer.Option(help="Levels that get the language-model sample (default: all).")] = "",
    queries: Annotated[Path | None, typer.Option(help="Your own queries: JSON lines {user, query, target?}.")] = None,
    load: Annotated[float, typer.Option(help="Target cloud load of LSC4Rec's re-request (Eq. 12).")] = 0.1,
    fewshot: Annotated[bool, typer.Option(help="Also evaluate held-out users cut to 3, 5, 10 interactions.")] = True,
    users: Annotated[int, typer.Option(help="Seeded sample of test users for a quick look (0 = all).")] = 0,
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = RESULTS_DIR,
    reports: Annotated[Path, typer.Option(help="Where the Markdown report and plots go.")] = REPORTS_DIR,
) -> None:
    """Accuracy of Tandem vs leak-controlled baselines per query fidelity, ablations, few-shot (full ranking)."""
    from evals.rec_queries import load_query_file  # deferred: loads the agents (see `tandem.cli`)
    from evals.rec_report import rich_table, write_report
    from evals.rec_suite import RecEval, RecEvalConfig
    from graph.runtime import evaluation_agents
    from tools.data import FIDELITIES
    from tools.workspace import Workspace

    chosen = _modes(fidelity)
    bad = [m for m in chosen if m not in FIDELITIES]
    if bad or (not chosen and queries is None):
        raise TandemError(f"unknown fidelity level(s) {bad or fidelity!r}; choose from {', '.join(FIDELITIES)}")
    llm_chosen = _modes(llm_fidelity) or chosen
    if set(llm_chosen) - set(chosen):
        raise TandemError(f"--llm-fidelity {llm_fidelity!r} must be among --fidelity {','.join(chosen)}")
    if not 0.0 <= load <= 1.0:
        raise TandemError(f"--load must be in [0, 1], got {load}")
    settings = get_settings()
    ws = Workspace(settings, data)
    if queries is not None:
        load_query_file(queries, ws.dataset, ws.splits)  # a bad line stops here, before any model loads
    device, clouds = evaluation_agents(settings, ws)
    config = RecEvalConfig(llm_users=llm_users, fidelities=chosen, llm_fidelities=llm_chosen, queries_file=queries,
                           load=load, seed=settings.seed, fewshot=fewshot, max_users=users or None)  # fmt: skip
    report = RecEval(settings, ws, device, clouds, config, console).run()
    command = (f"tandem eval rec --data {data} --llm-users {llm_users} --fidelity {','.join(chosen)} "
               f"--llm-fidelity {','.join(llm_chosen)} --load {load:g}"
               + (f" --queries {queries}" if queries else "") + ("" if fewshot else " --no-fewshot")
               + (f" --users {users}" if users else ""))  # fmt: skip
    json_path, md_path = write_report(report, out, reports, command)
    for mode in report["modes"]:
        console.print(rich_table(report, mode))
    console.print(safe(f"results: {json_path}\nreport: {md_path}"))


def _modes(text: str) -> tuple[str, ...]:
    """"none,habit" -> ("none", "habit"), blanks dropped."""
    return tuple(m.strip() for m in text.split(",") if m.strip())

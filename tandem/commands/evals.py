"""`tandem eval plans` and `tandem eval rec`: the evals prompt engineers and researchers run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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
    prompt: Annotated[list[str] | None, typer.Option(
        help="Prompt of a step: NAME@VERSION or ROLE=NAME@VERSION (abstract, plan, explain); repeatable.")] = None,
    compare: Annotated[tuple[str, str] | None, typer.Option(
        help="Two planning prompts to compare, A B: both run fresh in this invocation.")] = None,
    size: Annotated[int, typer.Option(help="Validation users in the suite (plus 13 adversarial cases).")] = 200,
    free: Annotated[bool, typer.Option(help="Do not enforce the JSON schema (raw prompt validity).")] = False,
    seed: Annotated[int, typer.Option(help="Suite seed.")] = 0,
    accuracy: Annotated[bool, typer.Option(help="Score the plans downstream (HR@10 / NDCG@10).")] = True,
    adversarial: Annotated[bool, typer.Option(help="Include the 13 adversarial cases.")] = True,
    out: Annotated[Path | None, typer.Option(help="Output folder; default <TANDEM_HOME>/evals/plans.")] = None,
) -> None:
    """Validity, decision tips (raw, before repair), downstream accuracy vs the rule planner, latency and tokens
    of one planning prompt, or of two compared with paired intervals and a verdict."""
    from agents.prompt_roles import choose_prompts  # deferred: loads the agents (see `tandem.cli`)
    from evals.plan_run import PlanEvalConfig, plan_out_dir, plan_refs, run_plan_evals
    from graph.runtime import evaluation_agents, with_prompts
    from tools.workspace import Workspace

    if size < 1:
        raise TandemError(f"--size must be at least 1, got {size}")
    chosen = choose_prompts(prompt or [])  # unknown name or version -> one clear line, before anything loads
    if compare:
        plan_refs(compare)
    settings = get_settings()
    ws = Workspace(settings, data)
    device, clouds = with_prompts(*evaluation_agents(settings, ws), chosen)
    clouds = _with_learned(clouds, settings.home, ws.dataset.name, warn=False)  # regret's hindsight targets
    config = PlanEvalConfig(size=size, seed=seed, structured=not free, compare=compare, accuracy=accuracy,
                            adversarial=adversarial)  # fmt: skip
    command = "tandem eval plans " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "tandem eval plans"
    run_plan_evals(ws, device, clouds, config, out or plan_out_dir(settings.home), console, command)


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
    prompt: Annotated[list[str] | None, typer.Option(
        help="Prompt of a step for the language-model sample: NAME@VERSION or ROLE=NAME@VERSION; repeatable.")] = None,
    headroom: Annotated[bool, typer.Option(
        help="Oracle-plan ceiling and learned-planner rows (the learned one needs `tandem plans label`).")] = True,
) -> None:
    """Accuracy of Tandem vs leak-controlled baselines per query fidelity, ablations, few-shot (full ranking)."""
    from agents.prompt_roles import choose_prompts  # deferred: loads the agents (see `tandem.cli`)
    from evals.rec_queries import load_query_file
    from evals.rec_report import rich_table, write_report
    from evals.rec_suite import RecEval, RecEvalConfig
    from graph.runtime import evaluation_agents, with_prompts
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
    device, clouds = with_prompts(device, clouds, choose_prompts(prompt or []))
    if headroom:
        clouds = _with_learned(clouds, settings.home, ws.dataset.name)
    config = RecEvalConfig(llm_users=llm_users, fidelities=chosen, llm_fidelities=llm_chosen, queries_file=queries,
                           load=load, seed=settings.seed, fewshot=fewshot, max_users=users or None,
                           headroom=headroom)  # fmt: skip
    report = RecEval(settings, ws, device, clouds, config, console).run()
    command = (f"tandem eval rec --data {data} --llm-users {llm_users} --fidelity {','.join(chosen)} "
               f"--llm-fidelity {','.join(llm_chosen)} --load {load:g}"
               + (f" --queries {queries}" if queries else "") + ("" if fewshot else " --no-fewshot")
               + (f" --users {users}" if users else "") + ("" if headroom else " --no-headroom"))  # fmt: skip
    json_path, md_path = write_report(report, out, reports, command)
    for mode in report["modes"]:
        console.print(rich_table(report, mode))
    console.print(safe(f"results: {json_path}\nreport: {md_path}"))


def _with_learned(clouds: dict, home: Path, data: str, warn: bool = True) -> dict:
    """The clouds plus the learned planner without a language model (`knn`) when hindsight labels exist."""
    from dataclasses import replace  # deferred with the agents (see `tandem.cli`)

    from agents.cloud.neighbours import NeighbourPlanner
    from evals.hindsight import exemplars_path

    path = exemplars_path(home, data)
    if not path.is_file():
        if not warn:
            return clouds
        console.print(f"[yellow]warning:[/] no hindsight labels for {data} ({path}): the learned-planner rows are "
                      f"skipped; `tandem plans label --data {data}` makes them", highlight=False)  # fmt: skip
        return clouds
    return {**clouds, "knn": replace(clouds["rule"], learned=NeighbourPlanner.load(path))}


def _modes(text: str) -> tuple[str, ...]:
    """"none,habit" -> ("none", "habit"), blanks dropped."""
    return tuple(m.strip() for m in text.split(",") if m.strip())

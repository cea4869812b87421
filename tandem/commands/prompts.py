"""`tandem prompts list|show|diff|new|exemplars`: the prompt files, for the people who edit them.

`exemplars build|list` writes and shows the plan exemplars (labelled abstracts with their hindsight target plans,
in Chroma) that a prompt with `exemplars:` in its header retrieves as few-shot examples.

`new` copies a version to the next one in the user's prompts folder (TANDEM_PROMPTS_DIR, default ./prompts)
with its header bumped; every listing shows each version's digest, the hash results are keyed by.

The lead registers it in `tandem/cli.py` with `app.add_typer(prompts_app, name="prompts")`.
Unknown names or versions print one red line and exit 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ground.errors import TandemError
from prompts import get_prompt, load_prompts, new_version
from tandem.views import JsonOption, error_line, labelled, print_json, safe

prompts_app = typer.Typer(
    help="List, show and diff the prompt templates (CDA4Rec Fig. 3-5).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except TandemError as error:
            Console(stderr=True).print(error_line(error), highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return run


@prompts_app.command("list")
@_one_line_errors
def list_prompts(as_json: JsonOption = False) -> None:
    """Every prompt with its versions, digest, source figure, placeholders and folder."""
    registry = load_prompts()
    if as_json:
        print_json([{"prompt": t.ref, "digest": t.digest, "source": t.source, "placeholders": sorted(t.placeholders),
                     "examples": t.examples_ref or (f"retrieved: {t.header['exemplars']}" if t.header.get("exemplars")
                                                    else None),
                     "adapter": t.header.get("adapter"),
                     "path": str(t.path) if t.path else None}
                    for t in registry.all()])  # fmt: skip
        return
    table = Table(title="prompts (" + ", then ".join(str(f) for f in registry.folders) + ")")
    for column in ("prompt", "digest", "source", "placeholders", "examples", "folder"):
        table.add_column(column, no_wrap=column in ("prompt", "digest"))
    for template in registry.all():
        folder = str(template.path.parent) if template.path else ""
        examples = template.examples_ref or (f"retrieved: {template.header['exemplars']} "
                                             f"(k={template.header.get('exemplar_k', 3)})"
                                             if template.header.get("exemplars") else "")  # fmt: skip
        if template.header.get("adapter"):
            examples = f"none (zero-shot; served by the {template.header['adapter']})"
        table.add_row(template.ref, template.digest, template.source, ", ".join(sorted(template.placeholders)),
                      examples, folder)  # fmt: skip
    Console().print(table)


@prompts_app.command("show")
@_one_line_errors
def show(name: Annotated[str, typer.Argument(help="NAME (newest version) or NAME@VERSION.")]) -> None:
    """Print one prompt: its header and body, and its few-shot examples if it has any."""
    template = get_prompt(name)
    console = Console()
    where = f" #{template.digest}  {template.source}  ({template.path})"
    console.print(Text.assemble(safe(template.ref, "bold"), safe(where)), highlight=False)
    console.print(safe(template.description), highlight=False)
    console.print(Syntax(template.body, "text", word_wrap=True, background_color="default"))
    for index, example in enumerate(template.examples, start=1):
        console.print(labelled(f"example {index}: ", example, "dim"), highlight=False)


@prompts_app.command("diff")
@_one_line_errors
def diff(
    a: Annotated[str, typer.Argument(help="First prompt, NAME or NAME@VERSION.")],
    b: Annotated[str, typer.Argument(help="Second prompt, NAME or NAME@VERSION.")],
) -> None:
    """Unified diff of two prompt bodies (e.g. `plan@1 plan_json@1`)."""
    first, second = get_prompt(a), get_prompt(b)
    lines = list(difflib.unified_diff(first.body.splitlines(), second.body.splitlines(), first.ref, second.ref,
                                      lineterm=""))  # fmt: skip
    console = Console()
    if not lines:
        console.print(safe(f"{first.ref} and {second.ref} have the same body"), highlight=False)
        return
    console.print(Syntax("\n".join(lines), "diff", word_wrap=True, background_color="default"))


@prompts_app.command("new")
@_one_line_errors
def new(
    name: Annotated[str, typer.Argument(help="Name of the new version (usually the source's name).")],
    source: Annotated[str, typer.Option("--from", help="The version to copy, NAME@VERSION (or NAME: newest).")],
) -> None:
    """Copy a prompt to the next version in your prompts folder, header bumped; opens nothing."""
    from agents.prompt_roles import roles_of  # deferred: loads the agents, which list/show/diff do without

    made = new_version(name, source)
    console = Console()
    for path in made.written:
        console.print(f"created {path}", highlight=False, soft_wrap=True)
    console.print(f"{made.template.ref} #{made.template.digest} is a copy of {made.source.ident}; edit it, then:",
                  highlight=False)  # fmt: skip
    if "plan" in roles_of(made.template):
        console.print(f"  tandem eval plans --compare {made.source.ref} {made.template.ref}", highlight=False)
    else:
        console.print(f"  tandem eval plans --prompt {made.template.ref}", highlight=False)


exemplars_app = typer.Typer(help="Plan exemplars: labelled abstracts retrieved as few-shot examples.",
                            no_args_is_help=True)  # fmt: skip
prompts_app.add_typer(exemplars_app, name="exemplars")


def _retrievers() -> list[str]:
    """The prompts whose header says they retrieve their few-shot examples from the plan exemplars."""
    return [t.ref for t in load_prompts().all() if t.header.get("exemplars") == "plan-exemplars"]


@exemplars_app.command("build")
@_one_line_errors
def exemplars_build(
    data: Annotated[str, typer.Option("--data", "-d", help="Data set whose hindsight labels to use.")] = "ml-100k",
) -> None:
    """Write the plan exemplars collection (Chroma) from `tandem plans label`'s labels: each labelled validation
    abstract with its hindsight target plan in the prompt's compact JSON, embedded with Tandem's text space."""
    import numpy as np  # deferred: the other prompt commands do without

    from evals.hindsight import LabelLine
    from ground.settings import get_settings
    from tools.exemplar_index import ExemplarIndex, exemplars_path, hindsight_dir
    from tools.plan_schema import plan_to_compact
    from tools.protocol import Plan
    from tools.tag_index import chroma_client

    settings = get_settings()
    path = exemplars_path(settings.home, data)
    if not path.is_file():
        raise TandemError(f"no hindsight labels for {data} at {path}: run `tandem plans label --data {data}` first")
    with np.load(path, allow_pickle=False) as saved:
        key, keys, vectors = str(saved["key"]), [str(k) for k in saved["keys"]], saved["vectors"]
    lines = {line.key: line for line in (LabelLine.model_validate_json(t) for t in
             (hindsight_dir(settings.home, data) / key / "labels.jsonl").read_text().splitlines())}  # fmt: skip
    plans = [plan_to_compact(Plan.model_validate(lines[k].target)) for k in keys]
    index = ExemplarIndex(chroma_client(settings.chroma_url, settings.chroma_dir), data)
    count = index.build(vectors, [lines[k].abstract for k in keys], plans, keys, f"hindsight-{key}")
    Console().print(safe(f"{count} plan exemplars for {data} (labels {key}) in "
                         f"{settings.chroma_url or settings.chroma_dir}; retrieved by {', '.join(_retrievers())}"),
                    highlight=False)  # fmt: skip


@exemplars_app.command("list")
@_one_line_errors
def exemplars_list(
    data: Annotated[str, typer.Option("--data", "-d", help="Data set.")] = "ml-100k",
) -> None:
    """The plan exemplars collection of a data set, and the prompts that retrieve from it."""
    from ground.settings import get_settings
    from tools.exemplar_index import ExemplarIndex
    from tools.tag_index import chroma_client

    settings = get_settings()
    info = ExemplarIndex(chroma_client(settings.chroma_url, settings.chroma_dir), data).info()
    Console().print(safe(f"{info['collection']}: {info['count']} exemplars from {info['source']}; retrieved by "
                         f"{', '.join(_retrievers()) or 'no prompt'}"), highlight=False)  # fmt: skip

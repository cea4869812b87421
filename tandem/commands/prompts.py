"""`tandem prompts list|show|diff`: the prompt files in prompts/, for the people who edit them.

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
from prompts import get_prompt, load_prompts
from tandem.views import error_line, labelled, safe

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
def list_prompts() -> None:
    """Every prompt with its versions, source figure and placeholders."""
    table = Table("prompt", "source", "placeholders", "examples", title="prompts/")
    for template in load_prompts().all():
        table.add_row(template.ref, template.source, ", ".join(sorted(template.placeholders)),
                      template.examples_ref or "")  # fmt: skip
    Console().print(table)


@prompts_app.command("show")
@_one_line_errors
def show(name: Annotated[str, typer.Argument(help="NAME (newest version) or NAME@VERSION.")]) -> None:
    """Print one prompt: its header and body, and its few-shot examples if it has any."""
    template = get_prompt(name)
    console = Console()
    console.print(Text.assemble(safe(template.ref, "bold"), "  ", safe(template.source)), highlight=False)
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

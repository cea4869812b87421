"""One request from the command line, and how its result is shown (rich or JSON)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from agents.prompt_roles import PromptChoice
from graph.run import recommend, request_input
from graph.runtime import TandemRuntime
from ground.settings import Settings
from tandem import views
from tools.data import Catalog


def request_once(
    settings: Settings,
    data: str,
    user: str,
    query: str,
    *,
    top: int = 10,
    explain: bool = False,
    planner: str = "llm",
    cloud_url: str | None = None,
    use_cache: bool = True,
    prompts: PromptChoice | None = None,
) -> tuple[Mapping[str, Any], Catalog]:
    """Build a runtime, check the request and the user, and run one request through the graph."""
    request_input(user, query, top_k=top)  # bad input -> one clear line, before anything loads
    runtime = TandemRuntime.create(settings, data or None, planner=planner, cloud_url=cloud_url,  # type: ignore[arg-type]
                                   prompts=prompts)
    runtime.workspace.dataset.user_index(user)  # unknown user -> one clear line
    state = recommend(runtime, user, query, explain=explain, top_k=top, use_cache=use_cache)
    return {**state, "notes": list(runtime.notes)}, runtime.device.catalog


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def result_json(state: Mapping[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The machine-readable result: what was asked, where it went, what came back."""
    items = [{"item_id": i, "score": s, "title": catalog[i].title, "tags": list(catalog[i].tags)}
             for i, s in zip(state.get("ranked", []), state.get("ranked_scores", []), strict=True)]  # fmt: skip
    keys = ("user", "source", "abstract", "plan_result", "inconsistency", "rerequests", "cache", "precision",
            "route", "crossings", "timings", "warnings", "notes", "explanation", "constraints", "replaced")  # fmt: skip
    out = {key: _plain(state.get(key)) for key in keys}
    out["plan"] = out.pop("plan_result")
    out["recommendations"] = items
    return out


def print_result(state: Mapping[str, Any], catalog: Catalog, console: Console, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(result_json(state, catalog), default=str))
        return
    abstract = state.get("abstract")
    if abstract is not None:
        body = Text.assemble(views.labelled("sanitized query: ", abstract.sanitized_query or "(none)", "bold"), "\n",
                             views.labelled("behaviour summary: ", abstract.behavior_summary, "bold"))  # fmt: skip
        console.print(Panel(body, title="abstract sent to the cloud"))
    extra = views.crossing_text({**state, "abstract": None})
    if extra.plain:
        console.print(extra)
    if state.get("plan_result") is not None:
        console.print(views.plan_table(state["plan_result"]))
    console.print(views.ranked_table(state, catalog))
    console.print(views.route_summary(state))
    for warning in state.get("warnings", []):
        console.print(views.labelled("warning: ", warning, "yellow"))
    views.runtime_notes(state.get("notes", []), console)
    if state.get("explanation"):
        console.print(Panel(views.safe(state["explanation"]), title="why these"))

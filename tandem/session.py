"""One request from the command line, and how its result is shown (rich or JSON)."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.panel import Panel

from ground.errors import TandemError
from ground.settings import Settings
from tandem import views


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
) -> dict[str, Any]:
    """Build a runtime, check the user exists, and run one request through the graph."""
    from graph.run import recommend
    from graph.runtime import TandemRuntime

    if planner not in ("llm", "rule"):
        raise TandemError(f"unknown planner {planner!r}; choose llm or rule")
    if len(query) > 10_000:
        raise TandemError(f"query is {len(query):,} characters; the limit is 10,000")
    runtime = TandemRuntime.create(settings, data or None, planner=planner, cloud_url=cloud_url)
    runtime.workspace.dataset.user_index(user)  # unknown user -> one clear line
    runtime.workspace.index.tags()  # missing index -> one clear line
    state = recommend(runtime, user, query, explain=explain, top_k=top)
    state["_catalog"] = runtime.workspace.dataset.catalog
    return state


def result_json(state: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable result: what was asked, where it went, what came back."""
    catalog = state.get("_catalog")
    items = [
        {"item_id": i, "score": s, **({"title": catalog[i].title, "tags": list(catalog[i].tags)} if catalog else {})}
        for i, s in zip(state.get("ranked", []), state.get("ranked_scores", []), strict=True)
    ]
    return {
        "user": state["user"],
        "source": state.get("source"),
        "abstract": state.get("abstract"),
        "plan": state.get("plan_result"),
        "recommendations": items,
        "inconsistency": state.get("inconsistency"),
        "rerequests": state.get("rerequests", 0),
        "cache": state.get("cache"),
        "route": state.get("route", []),
        "crossings": state.get("crossings", []),
        "timings": state.get("timings", []),
        "warnings": state.get("warnings", []),
        "explanation": state.get("explanation"),
    }


def print_result(state: dict[str, Any], console: Console, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(result_json(state), default=str))
        return
    abstract = state.get("abstract")
    if abstract:
        console.print(
            Panel(
                f"[bold]sanitized query:[/] {abstract.get('sanitized_query') or '(none)'}\n"
                f"[bold]behaviour summary:[/] {abstract.get('behavior_summary', '')}",
                title="abstract sent to the cloud",
            )
        )
    if state.get("plan_result"):
        console.print(views.plan_table(state["plan_result"]))
    console.print(views.ranked_table(state, state["_catalog"]))
    console.print(views.route_summary(state))
    for warning in state.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}")
    if state.get("explanation"):
        console.print(Panel(state["explanation"], title="why these"))

"""`make demo`: one real recommendation end to end on the embedded defaults.

Fetches ML-100K, embeds the items (CDA4Rec Eq. 1), builds the Chroma tag index, trains the device encoder
if no checkpoint exists, then runs one full request through the graph with the embedded Gemma 3 270M as
both agents' language model, and prints the abstract, the plan, the cloud candidates, the ranked list and
the explanation.
"""

from __future__ import annotations

from rich.console import Console

from tandem import views
from tools.workspace import Workspace

DEMO_USER = "196"
DEMO_QUERY = "Something funny and animated for a family evening, like the films I enjoyed last year"


def run_demo(ws: Workspace, console: Console, user: str = DEMO_USER, query: str = DEMO_QUERY) -> None:
    from graph.run import recommend
    from graph.runtime import TandemRuntime
    from tandem.session import print_result

    console.rule(f"[bold]Tandem demo on {ws.data}")
    console.print(views.catalog_summary(ws.dataset, ws.splits))
    report = views.build_index_with_progress(ws)
    console.print(f"tag index: {report.tags} tag collections ({'built' if report.built else 'up to date'})")

    runtime = TandemRuntime.create(ws.settings, ws.data)
    runtime.workspace = ws
    runtime.encoder("SASRec")  # trains once when no checkpoint exists
    console.rule(f"[bold]one request: user {user}")
    console.print(f"[bold]raw query (stays on the device):[/] {query}")
    state = recommend(runtime, user, query, explain=True, use_cache=False, allow_rerequest=False)
    state["_catalog"] = ws.dataset.catalog
    plan_tags = state["plan_result"]["plan"]["tags"] if state.get("plan_result") else {}
    catalog = ws.dataset.catalog
    top_candidates = [
        views.Candidate(item_id, score, tuple(t for t in catalog[item_id].tags if t in plan_tags))
        for item_id, score in zip(state["candidates"][:5], state["candidate_scores"][:5], strict=True)
    ]
    console.print(
        views.candidates_table("cloud candidates", plan_tags, top_candidates, ws.dataset.catalog)
        if top_candidates
        else "no cloud candidates (device-only path)"
    )
    console.print(f"{len(state['candidates'])} candidates from the cloud; the device re-ranks them:")
    print_result(state, console)

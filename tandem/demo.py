"""`make demo`: one real recommendation end to end on the embedded defaults.

Runs `tandem setup` for ML-100K (fetch, item embeddings of CDA4Rec Eq. 1, Chroma tag index, device encoders,
calibrator and re-request threshold: whatever is missing), then one full request through the graph with the
embedded Gemma 3 270M as both agents' language model, and prints which model plans (the "plan adapter <digest>"
of CDA4Rec Eq. 8 when `tandem train --planner` has trained one, else the "base model" with few-shot prompts),
the abstract, the plan, the cloud candidates, the ranked list and the explanation.
"""

from __future__ import annotations

from rich.console import Console

from graph.run import recommend
from graph.runtime import TandemRuntime
from tandem import views
from tandem.session import print_result
from tandem.setup import setup
from tools.workspace import Workspace

DEMO_USER = "196"
DEMO_QUERY = "Something funny and animated for a family evening, like the films I enjoyed last year"


def run_demo(ws: Workspace, console: Console, user: str = DEMO_USER, query: str = DEMO_QUERY) -> None:
    console.rule(views.safe(f"Tandem demo on {ws.data}", "bold"))
    console.print(views.catalog_summary(ws.dataset, ws.splits))
    report = setup(ws, console)
    for line in report.built:
        console.print(views.safe(f"built: {line}"))
    console.print(views.safe(f"already there: {', '.join(report.present) or 'nothing'}"))

    runtime = TandemRuntime.create(ws.settings, ws.data)
    prompt = runtime.cloud.plan_prompt if runtime.cloud is not None else "-"
    console.print(views.labelled("cloud planner: ", f"{runtime.plan_model}, prompt {prompt}", "bold"))
    views.runtime_notes(runtime.notes, console)
    if runtime.cloud is not None:
        console.print(views.labelled("cloud semantic tower (Eq. 2): ", runtime.cloud.describe_semantics(), "bold"))
    console.rule(views.safe(f"one request: user {user}", "bold"))
    console.print(views.labelled("raw query (stays on the device): ", query, "bold"))
    state = recommend(runtime, user, query, explain=True, use_cache=False, allow_rerequest=False)
    catalog = runtime.device.catalog
    plan_tags = state["plan_result"].plan.tags if state.get("plan_result") else {}
    top_candidates = [
        views.Candidate(item_id, score, tuple(t for t in catalog[item_id].tags if t in plan_tags))
        for item_id, score in zip(state["candidates"][:5], state["candidate_scores"][:5], strict=True)
    ]
    if top_candidates:
        console.print(views.candidates_table("cloud candidates", plan_tags, top_candidates, catalog))
    else:
        console.print("no cloud candidates (device-only path)")
    console.print(f"{len(state['candidates'])} candidates from the cloud; the device re-ranks them:")
    print_result(state, catalog, console)

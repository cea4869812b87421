"""`make demo`: the whole pipeline that exists so far, on the embedded defaults."""

from __future__ import annotations

from rich.console import Console

from tandem import views
from tandem.workspace import Workspace

DEMO_QUERY = "a funny animated movie the whole family can watch"


def run_demo(ws: Workspace, console: Console) -> None:
    console.rule(f"[bold]Tandem demo on {ws.data}")
    console.print(views.catalog_summary(ws.dataset, ws.splits))
    console.print(views.sample_queries(ws.dataset, ws.splits))
    report = views.build_index_with_progress(ws)
    console.print(f"tag index: {report.tags} tag collections ({'built' if report.built else 'up to date'})")
    query = ws.semantics.project_texts([DEMO_QUERY])[0]
    nearest = ws.index.nearest_tags(query, 3)
    counts = {tag: 5 for tag, _ in nearest}
    candidates = ws.index.retrieve(query, counts)
    console.print(views.candidates_table(DEMO_QUERY, counts, candidates[:10], ws.dataset.catalog))

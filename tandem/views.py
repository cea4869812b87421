"""Rich renderings shared by the CLI and the demo (tables, progress), kept apart from the logic.

Every string that came from a user, a data file, a model or the cloud enters a rendering through `safe`: as
`rich.text.Text` (never parsed as markup, so `[/]` is just two brackets) with control characters neutralised
(`ground.text.printable`). Literal strings of this package may use markup.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ground.errors import TandemError
from ground.text import one_line, printable
from tools.data import Catalog, Dataset, Splits
from tools.protocol import PlanResult
from tools.tag_index import BuildReport, Candidate
from tools.workspace import Workspace

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]


def print_json(payload: object, console: Console | None = None) -> None:
    """`payload` as one JSON document on stdout (valid however wide the terminal; tables go away)."""
    (console or Console()).print_json(json.dumps(payload, default=str))


def safe(text: object, style: str = "", *, multiline: bool = True) -> Text:
    """Untrusted text as a rich `Text`: printed literally, control and escape characters shown as escapes."""
    return Text(printable(text, multiline=multiline), style=style)


def labelled(label: str, text: object, style: str = "", *, multiline: bool = True) -> Text:
    """`label` in `style` followed by untrusted `text` (a warning, an error, a field of the abstract)."""
    return Text.assemble((label, style), safe(text, multiline=multiline))


def runtime_notes(notes: list[str], console: Console) -> None:
    """A runtime's notes on what its home lacks (`TandemRuntime.notes`), one yellow line each."""
    for note in notes:
        console.print(labelled("note: ", note, "yellow"))


def error_line(exc: BaseException | str, label: str = "error: ") -> Text:
    """One red line for an error message, whatever characters it holds."""
    return Text.assemble((label, "bold red"), one_line(exc))


def parse_tag_counts(text: str) -> dict[str, int]:
    """Parse "Drama=10,Comedy=5" into {"Drama": 10, "Comedy": 5}."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        tag, sep, number = part.rpartition("=")
        if not sep or not tag.strip() or not number.strip().isdigit():
            raise TandemError(f'bad tag count {part!r}: write tags as "Drama=10,Comedy=5"')
        counts[tag.strip()] = int(number)
    return counts


def catalog_summary(dataset: Dataset, splits: Splits) -> Table:
    facts = catalog_json(dataset, splits)
    lengths, split = facts["history_length"], facts["splits"]
    table = Table(title=safe(f"{dataset.name} catalog"), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("users", f"{facts['users']:,}")
    table.add_row("items", f"{facts['items']:,}")
    table.add_row("interactions", f"{facts['interactions']:,}")
    table.add_row("history length", f"min {lengths['min']}, median {lengths['median']}, max {lengths['max']}")
    tags = ", ".join(f"{t} ({n})" for t, n in facts["tags"].items())
    table.add_row("tags", safe(f"{len(facts['tags'])}: {tags}"))
    table.add_row(
        "leave-one-out",
        f"{split['train']:,} training users, {split['valid']:,} valid, {split['test']:,} test, "
        f"{split['fewshot']:,} few-shot (held out), max length {split['max_len']}",
    )
    return table


def catalog_json(dataset: Dataset, splits: Splits) -> dict[str, Any]:
    """What `catalog_summary` shows, as data for `tandem data info --json`."""
    lengths = np.array([len(s) for s in dataset.sequences])
    tag_sizes = Counter(tag for item in dataset.catalog.items for tag in item.tags)
    return {
        "data": dataset.name, "users": dataset.num_users, "items": dataset.catalog.num_items,
        "interactions": dataset.num_interactions,
        "history_length": {"min": int(lengths.min()), "median": int(np.median(lengths)), "max": int(lengths.max())},
        "tags": {tag: tag_sizes[tag] for tag in dataset.catalog.tags()},
        "splits": {"train": len(splits.train), "valid": len(splits.valid), "test": len(splits.test),
                   "fewshot": len(splits.fewshot), "max_len": splits.max_len},
    }  # fmt: skip


def sample_queries(dataset: Dataset, splits: Splits, count: int = 6) -> Table:
    table = Table(title="generated queries (test split)")
    for column in ("user", "clarity", "query", "target (never named)", "target tags"):
        table.add_column(column)
    for inst in splits.test[:count]:
        item = dataset.catalog[inst.target]
        table.add_row(safe(dataset.user_names[inst.user]), inst.clarity, safe(inst.query or "-"), safe(item.title),
                      safe(", ".join(item.tags)))  # fmt: skip
    return table


def build_index_with_progress(ws: Workspace, force: bool = False) -> BuildReport:
    """Embed items (with its own progress bar) and build the tag collections under a progress bar."""
    semantics = ws.semantics
    index = ws.index_for_build()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("tag collections", total=None)

        def advance(tag: str, done: int, total: int) -> None:
            progress.update(task, description=f"tag collection {tag}", completed=done, total=total)

        return index.build(ws.dataset.catalog, semantics, force=force, on_progress=advance)


def candidates_table(query: str, counts: dict[str, int], candidates: list[Candidate], catalog: Catalog) -> Table:
    plan = ", ".join(f"{t}: {n}" for t, n in counts.items())
    caption = safe(f"plan {{{plan}}}, score = e_sem . e_i (Eq. 3)")
    table = Table(title=safe(f"tag-group retrieval: {query}"), caption=caption)
    for column in ("#", "score", "title", "year", "tags", "found via"):
        table.add_column(column)
    for rank, cand in enumerate(candidates, 1):
        item = catalog[cand.item_id]
        table.add_row(
            str(rank), f"{cand.score:.3f}", safe(item.title), str(item.year or ""), safe(", ".join(item.tags)),
            safe(", ".join(cand.tags)),
        )
    return table


def candidates_json(query: str, counts: dict[str, int], candidates: list[Candidate], catalog: Catalog) -> dict:
    """What `candidates_table` shows, as data for `tandem index query --json`."""
    rows = [{"rank": rank, "item": cand.item_id, "title": catalog[cand.item_id].title,
             "year": catalog[cand.item_id].year, "tags": list(catalog[cand.item_id].tags),
             "score": round(float(cand.score), 6), "found_via": list(cand.tags)}
            for rank, cand in enumerate(candidates, 1)]  # fmt: skip
    return {"query": query, "plan": counts, "candidates": rows}


PLAN_ORIGIN = {
    "parsed": "language-model planner", "repaired": "language-model planner, repaired on parsing",
    "fallback": "rule planner, because the language model's plan was unusable", "rule": "rule planner",
    "cached": "plan behind the cached semantics", "device": "the device's own plan, the cloud being unreachable",
}  # fmt: skip


def plan_table(result: PlanResult) -> Table:
    """The strategy plan (CDA4Rec Fig. 4) with how it was obtained and each module's rationale.

    A plan with one rationale for all four modules (a compact plan) shows it once, under the table; the
    violations of a repaired plan are labelled as what the model wrote, the table being the repaired plan."""
    plan, why = result.plan, result.plan.explanations
    prompt = f", prompt {result.prompt}" if result.prompt else ""
    reasons = [why.semantic, why.retrieval, why.structured, why.ranking]
    single = len(set(reasons)) == 1
    caption = safe(f"why (one rationale for the whole plan): {reasons[0]}") if single else None
    table = Table(title=safe(f"plan ({PLAN_ORIGIN.get(result.status, result.status)}{prompt})"), caption=caption)
    table.add_column("module", style="bold")
    table.add_column("decision")
    if not single:
        table.add_column("why")
    tags = ", ".join(f"{t}: {n}" for t, n in plan.tags.items())
    rows = [
        ("semantic (Eq. 2)", f"alpha = {plan.alpha:.2f} (query vs behaviour)"),
        ("retrieval (Eq. 3)", f"{plan.tag_count} tags, {plan.candidate_size} candidates: {tags}"),
        ("structured (Eq. 4)", plan.encoder),
        ("ranking (Eq. 5)", f"beta = {plan.beta:.2f} (semantic vs structured)"),
    ]
    for (module, decision), reason in zip(rows, reasons, strict=True):
        table.add_row(module, safe(decision), *([] if single else [safe(reason)]))
    label = "model failed" if result.status == "fallback" else "repaired"
    for violation in result.violations[:6]:
        note = f"in the model's text: {violation.message} (the table shows the final plan)"
        if result.status == "fallback":
            note = violation.message
        table.add_row(Text(label, style="yellow"), safe(violation.field), *([] if single else [safe(note)]))
        if single:
            table.add_row("", safe(note, style="yellow"))
    return table


def resolution_text(turn: Any) -> Text:
    """A chat turn as the device understood it (`tools.conversation.Resolution`), before it is planned."""
    text = Text.assemble(("request: ", "bold"), safe(turn.request or "(none: from your history alone)"))
    for note in turn.notes:
        text.append_text(safe("\n  " + note, style="dim" if not note.startswith("not used") else "yellow"))
    return text


def crossing_text(state: Mapping[str, Any]) -> Text:
    """What crossed to the cloud, what the device replaced first, and what the device enforces itself."""
    abstract, constraints = state.get("abstract"), state.get("constraints")
    lines: list[Text] = []
    if abstract is not None:
        lines.append(Text.assemble(("sent to the cloud: ", "bold"), safe(abstract.sanitized_query or "(no query)")))
    lines += [safe("  replaced on the device first: " + line, style="dim") for line in state.get("replaced") or []]
    if constraints is not None and constraints.summary():
        lines.append(Text.assemble(("enforced on the device: ", "bold"), safe(constraints.summary())))
    return Text("\n").join(lines)


def reset_text(interactions: int, session: str) -> Text:
    """What /reset cleared and what it kept."""
    return Text(
        f"reset: cleared this user's device history ({interactions} interactions), cached cloud semantics and the "
        f"conversation (topic, constraints, seeds). Kept: the catalogue, the models and other users. The data set's "
        f"ratings are not loaded again: your history starts empty (/watched adds films). New session {session}."
    )


def ranked_table(state: Mapping[str, Any], catalog: Catalog) -> Table:
    table = Table(title=safe(f"recommendations (source: {state.get('source') or '?'})"))
    for column in ("#", "score", "title", "year", "tags"):
        table.add_column(column)
    rows = zip(state.get("ranked", []), state.get("ranked_scores", []), strict=True)
    for rank, (item_id, score) in enumerate(rows, 1):
        item = catalog[item_id]
        table.add_row(str(rank), f"{score:.3f}", safe(item.title), str(item.year or ""), safe(", ".join(item.tags)))
    return table


def route_summary(state: Mapping[str, Any]) -> Text:
    crossings = state.get("crossings", [])
    up = sum(c.bytes_up for c in crossings)
    down = sum(c.bytes_down for c in crossings)
    total = sum(t["seconds"] for t in state.get("timings", []))
    inconsistency = state.get("inconsistency")
    parts = [
        "route: " + " -> ".join(state.get("route", [])),
        f"boundary: {len(crossings)} crossing(s), {up:,} B up, {down:,} B down",
        f"inconsistency (LSC4Rec Eq. 11): {inconsistency:.3f}" if inconsistency is not None else "",
        f"node time: {total:.2f} s",
    ]
    return safe("\n".join(p for p in parts if p))

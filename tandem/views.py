"""Rich renderings shared by the CLI and the demo (tables, progress), kept apart from the logic."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tandem.errors import TandemError
from tandem.workspace import Workspace
from tools.data import Catalog, Dataset, Splits
from tools.tag_index import BuildReport, Candidate


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
    lengths = np.array([len(s) for s in dataset.sequences])
    tag_sizes = Counter(tag for item in dataset.catalog.items for tag in item.tags)
    table = Table(title=f"{dataset.name} catalog", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("users", f"{dataset.num_users:,}")
    table.add_row("items", f"{dataset.catalog.num_items:,}")
    table.add_row("interactions", f"{dataset.num_interactions:,}")
    table.add_row("history length", f"min {lengths.min()}, median {int(np.median(lengths))}, max {lengths.max()}")
    table.add_row("tags", f"{len(tag_sizes)}: " + ", ".join(f"{t} ({tag_sizes[t]})" for t in dataset.catalog.tags()))
    table.add_row(
        "leave-one-out",
        f"{len(splits.train):,} training users, {len(splits.valid):,} valid, {len(splits.test):,} test, "
        f"{len(splits.fewshot):,} few-shot (held out), max length {splits.max_len}",
    )
    return table


def sample_queries(dataset: Dataset, splits: Splits, count: int = 6) -> Table:
    table = Table(title="generated queries (test split)")
    for column in ("user", "clarity", "query", "target (never named)", "target tags"):
        table.add_column(column)
    for inst in splits.test[:count]:
        item = dataset.catalog[inst.target]
        table.add_row(dataset.user_names[inst.user], inst.clarity, inst.query or "-", item.title, ", ".join(item.tags))
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
    table = Table(title=f"tag-group retrieval for {query!r}", caption=f"plan {{{plan}}}, score = e_sem . e_i (Eq. 3)")
    for column in ("#", "score", "title", "year", "tags", "found via"):
        table.add_column(column)
    for rank, cand in enumerate(candidates, 1):
        item = catalog[cand.item_id]
        table.add_row(
            str(rank), f"{cand.score:.3f}", item.title, str(item.year or ""), ", ".join(item.tags), ", ".join(cand.tags)
        )
    return table

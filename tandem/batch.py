"""`tandem recommend --users FILE`: many requests in one process, JSON lines out.

The file holds one request per line, JSON (`{"user": "196", "query": "...", "top": 10}`; `query` and `top`
optional). One runtime is built for the whole file, so models, encoders and the index load once. Each
line's answer is one JSON line on the output (the same fields as `tandem recommend --json`, plus `line`); a
bad line or a failed request becomes `{"line": N, "error": "..."}` and the run goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from graph.run import recommend
from graph.runtime import TandemRuntime
from ground.errors import TandemError
from ground.settings import Settings
from tandem.session import result_json


class BatchRequest(BaseModel):
    """One line of a batch file."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1)
    query: str = ""
    top: int = Field(10, ge=1, le=100)


class BatchSummary(BaseModel):
    """What a batch run did."""

    requests: int
    answered: int
    failed: int
    seconds: float
    users_per_s: float
    notes: list[str] = []  # what the runtime's home lacks (`TandemRuntime.notes`), reported with the summary


def read_requests(path: Path) -> Iterator[tuple[int, BatchRequest | str]]:
    """(line number, request) for each non-empty line, or (line number, why it is not a request)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TandemError(f"cannot read the batch file {path}: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, BatchRequest.model_validate_json(line)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            yield number, f"{where}: {first['msg']}"


def run_batch(
    settings: Settings, data: str | None, path: Path, out: IO[str], *, planner: str = "llm",
    cloud_url: str | None = None, explain: bool = False, console: Console | None = None, store_path: str | None = None,
) -> BatchSummary:
    """Answer every request of `path` with one runtime, writing one JSON line per request to `out`."""
    requests = list(read_requests(path))
    if not requests:
        raise TandemError(f"the batch file {path} holds no requests")
    runtime = TandemRuntime.create(settings, data, planner=planner, cloud_url=cloud_url,  # type: ignore[arg-type]
                                   store_path=store_path)  # fmt: skip
    catalog = runtime.device.catalog
    answered = failed = 0
    start = time.perf_counter()
    columns = (TextColumn("requests"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=True) as progress:
        task = progress.add_task("requests", total=len(requests))
        for number, request in requests:
            line: dict
            if isinstance(request, str):
                line, failed = {"line": number, "error": request}, failed + 1
            else:
                try:
                    runtime.workspace.dataset.user_index(request.user)
                    state = recommend(runtime, request.user, request.query, explain=explain, top_k=request.top)
                    line, answered = {"line": number, **result_json(state, catalog)}, answered + 1
                except TandemError as error:
                    line, failed = {"line": number, "user": request.user, "error": str(error)}, failed + 1
            out.write(json.dumps(line, default=str) + "\n")
            out.flush()
            progress.advance(task)
    seconds = time.perf_counter() - start
    total = answered + failed
    return BatchSummary(requests=total, answered=answered, failed=failed, seconds=round(seconds, 3),
                        users_per_s=round(answered / seconds, 3) if seconds > 0 else 0.0,
                        notes=list(runtime.notes))  # fmt: skip

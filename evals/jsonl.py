"""Result files that survive interruption: JSON lines appended one flushed line at a time, JSON written whole.

An eval appends each finished case as one line; on rerun it reads back the complete lines and skips
those cases, so an interrupted run resumes where it stopped. A line cut short by the interruption does
not parse and is skipped (and redone). Summaries are written to a temporary file and renamed into place,
so a reader never sees half a file (`ground.files`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

Record = TypeVar("Record", bound=BaseModel)


def read_jsonl(path: Path, model: type[Record]) -> list[Record]:
    """Every complete, valid line of `path` as `model` (a missing file reads as empty)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(model.model_validate_json(line))
        except ValueError:
            continue
    return records


class JsonlAppender:
    """Append records to a JSON-lines file, one flushed line each (use as a context manager)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a")  # noqa: SIM115 - closed in __exit__

    def write(self, record: BaseModel) -> None:
        self._file.write(record.model_dump_json() + "\n")
        self._file.flush()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

"""Files written whole and atomically: a temporary file beside the target, then a rename, so a reader (or a run
interrupted half way) never sees half a file. The one writer for every JSON or text result and decision file."""

from __future__ import annotations

import json
from pathlib import Path


def write_text(path: Path, text: str) -> None:
    """Write text atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, payload: dict | list) -> None:
    """Write `payload` as indented JSON atomically."""
    write_text(path, json.dumps(payload, indent=2, default=float) + "\n")

"""Files written whole and atomically: a temporary file beside the target, then a rename, so a reader (or a run
interrupted half way) never sees half a file. The one writer for every JSON or text result and decision file, and
the one copier of a finished model file into the place the runtime loads it from."""

from __future__ import annotations

import json
import shutil
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


def copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically (a model file installed where a runtime may be reading)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)

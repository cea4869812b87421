"""Helpers of the fault-injection tests: the CLI as a real subprocess over a Tandem home of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ground.settings import Settings

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
CLI = "from tandem.entry import main; main()"
"""What the `tandem` console script runs."""


def device_home(tmp_path: Path) -> Path:
    """A Tandem home that reads this machine's data, embeddings, index and models (built once, never written
    here) but keeps its own device store and chat sessions."""
    real = Settings().home
    home = tmp_path / "home"
    home.mkdir()
    for name in ("data", "embeddings", "chroma", "models"):
        if (real / name).exists():
            (home / name).symlink_to(real / name)
    (home / "device").mkdir()
    return home


def cli_env(home: Path | None = None, **env: str) -> dict[str, str]:
    environ = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **env}
    if home is not None:
        environ["TANDEM_HOME"] = str(home)
    return environ


def tandem(*args: str, home: Path | None = None, stdin: str | None = None, timeout: float = 600, **env: str):
    """Run the CLI to completion."""
    return subprocess.run([PYTHON, "-c", CLI, *args], input=stdin, capture_output=True, text=True,
                          env=cli_env(home, **env), cwd=ROOT, timeout=timeout)  # fmt: skip

"""Start a real `tandem cloud serve` process on loopback for tests, from this checkout's code, and stop it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, serving

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from tandem.cli import main; main()"]
"""The CLI of this checkout (run from its root), whichever `tandem` script the environment has installed."""


@contextmanager
def cloud_process(
    log_path: Path, *, planner: str = "rule", env: dict[str, str] | None = None, timeout: float = 180.0,
    args: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen]]:
    """`tandem cloud serve` on 127.0.0.1 with `env` added (and extra CLI `args`); yields (url, process) once
    /health answers."""
    port = free_port()
    command = [*CLI, "cloud", "serve", "--data", "ml-100k", "--port", str(port), "--planner", planner, *args]
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/health", log_path, name="cloud serve", timeout=timeout, stop_timeout=30,
                 cwd=ROOT, env={**os.environ, **(env or {})}) as proc:  # fmt: skip
        yield url, proc

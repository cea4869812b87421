"""Start a real `tandem cloud serve` process on loopback for tests, from this checkout's code, and stop it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.chroma_server import free_port

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from tandem.cli import main; main()"]
"""The CLI of this checkout (run from its root), whichever `tandem` script the environment has installed."""


@contextmanager
def cloud_process(log_path: Path, *, planner: str = "rule", env: dict[str, str] | None = None,
                  timeout: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:  # fmt: skip
    """`tandem cloud serve` on 127.0.0.1 with `env` added; yields (url, process) once /health answers."""
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [*CLI, "cloud", "serve", "--data", "ml-100k", "--port", str(port), "--planner", planner],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cloud serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                httpx.get(f"{url}/health", timeout=2.0)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
            if time.monotonic() > deadline:
                raise RuntimeError(f"cloud serve did not answer within {timeout} s")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

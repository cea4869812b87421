"""Real server processes on loopback for tests: a free port, start, wait until a probe answers, stop."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    command: list[str], probe: str, log_path: Path, *, name: str, timeout: float = 60.0, stop_timeout: float = 10.0,
    ready: Callable[[httpx.Response], bool] = lambda _: True, **popen: Any,
) -> Iterator[subprocess.Popen]:
    """Run `command` (output to `log_path`) and yield the process once GET `probe` answers (and `ready` accepts
    the answer); terminate it afterwards (kill after `stop_timeout`). A process that exits or stays silent past
    `timeout` is a RuntimeError naming the log."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if ready(httpx.get(probe, timeout=2.0)):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {timeout} s; see {log_path}")
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()

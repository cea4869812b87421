"""Start a real `chroma run` server on loopback for tests, and stop it afterwards."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, serving


@contextmanager
def chroma_server(path: Path, timeout: float = 60.0) -> Iterator[str]:
    """Run `chroma run --path PATH` on 127.0.0.1 and yield its URL once the heartbeat answers."""
    with chroma_process(path, timeout) as (url, _proc):
        yield url


@contextmanager
def chroma_process(path: Path, timeout: float = 60.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """`chroma_server`, also yielding the process, so a test can kill Chroma mid-session."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    url = f"http://127.0.0.1:{port}"
    command = [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, f"{url}/api/v2/heartbeat", path.parent / f"chroma-{port}.log", name="chroma run",
                 timeout=timeout, ready=lambda r: r.status_code == 200) as proc:  # fmt: skip
        yield url, proc

"""Servers the benchmarks start as subprocesses on loopback: started, polled until ready, stopped.

`tests/servers.py` does the same for the test suite; the benchmarks keep their own (evals never import tests).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A subprocess whose output goes to `log`, ready once GET `ready_url` answers 200 (`wait`), then `stop`ped:
    terminated, killed if it has not exited 30 s later."""

    def __init__(self, command: Sequence[str], ready_url: str, log: Path, name: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:  # fmt: skip
        self.name, self.ready_url = name, ready_url
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float) -> None:
        """Poll until the server answers; stop it and raise if it exits or does not answer within `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(self.ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout:g} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

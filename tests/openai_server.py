"""Start llama-cpp-python's own OpenAI-compatible server (its `server` extra) on loopback with the packaged
Gemma 3 270M, for tests of the `openai` backend; stop it afterwards."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.chroma_server import free_port

MODEL_ALIAS = "gemma-3-270m"  # the name the server answers to, as a hosted model has one


@contextmanager
def openai_server(model_path: Path, log_dir: Path, timeout: float = 120.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on 127.0.0.1 and yield its base URL (…/v1) once /v1/models answers."""
    port = free_port()
    log = open(log_dir / f"openai-server-{port}.log", "wb")
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--chat_format", "gemma",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}; see {log.name}")
            try:
                if httpx.get(f"{url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

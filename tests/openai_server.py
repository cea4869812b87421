"""Start llama-cpp-python's own OpenAI-compatible server (its `server` extra) on loopback with the packaged
Gemma 3 270M, for tests of the `openai` backend; stop it afterwards."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port, serving

MODEL_ALIAS = "gemma-3-270m"  # the name the server answers to, as a hosted model has one


@contextmanager
def openai_server(model_path: Path, log_dir: Path, timeout: float = 120.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on 127.0.0.1 and yield its base URL (…/v1) once /v1/models answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--chat_format", "gemma",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with serving(command, f"{url}/models", log_dir / f"openai-server-{port}.log", name="llama_cpp.server",
                 timeout=timeout, stop_timeout=20, ready=lambda r: r.status_code == 200):  # fmt: skip
        yield url


@contextmanager
def openai_embedding_server(model_path: Path, log_dir: Path, timeout: float = 120.0) -> Iterator[str]:
    """The same server serving `/v1/embeddings` (mean-pooled, `tests.llama_embedding_server`); yields …/v1."""
    port = free_port()
    command = [
        sys.executable, "-m", "tests.llama_embedding_server", "--model", str(model_path), "--model_alias",
        MODEL_ALIAS, "--embedding", "true", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512",
        "--n_threads", "2",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with serving(command, f"{url}/models", log_dir / f"embedding-server-{port}.log", name="llama_cpp.server",
                 timeout=timeout, stop_timeout=20, ready=lambda r: r.status_code == 200,
                 cwd=Path(__file__).resolve().parents[1]):  # fmt: skip
        yield url

"""A small Ollama-API-compatible HTTP server backed by the embedded llama.cpp model (tests only).

It answers what the official `ollama` client calls: POST /api/chat, POST /api/generate, POST /api/embed,
GET /api/tags and GET /api/version, on 127.0.0.1 with a free port. Embeddings come from the packaged
all-MiniLM-L6-v2, the model Ollama itself serves as `all-minilm`; like Ollama, /api/embed answers unit vectors.
`format` is honoured as Ollama does: "json" -> any JSON
object, a JSON schema -> that schema, both through a llama.cpp grammar. Unknown models get Ollama's 404.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agents.llm import LLMError, complete_llama, load_llama
from tools.text_encoders import LocalMiniLM


class OllamaStub:
    """`with OllamaStub(model_path) as stub: ollama.Client(host=stub.url)`."""

    def __init__(self, model_path: Path | str, models: tuple[str, ...] = ("llama3.1:8b", "llama3.2:1b"),
                 embed_models: tuple[str, ...] = ("all-minilm",)) -> None:  # fmt: skip
        self.model_path = Path(model_path)
        self.models = models
        self.embed_models = embed_models
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OllamaStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path == "/api/tags":
                    now = datetime.now(UTC).isoformat()
                    size = stub.model_path.stat().st_size
                    models = [{"name": m, "model": m, "modified_at": now, "size": size, "digest": "stub",
                               "details": {"format": "gguf", "family": "gemma3"}} for m in stub.models]  # fmt: skip
                    self._send(200, {"models": models})
                elif self.path == "/api/version":
                    self._send(200, {"version": "0.0.0-tandem-stub"})
                else:
                    self._send(404, {"error": f"not found: {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                stub.requests.append({"path": self.path, **body})
                if self.path == "/api/embed":
                    self._embed(body)
                    return
                if self.path not in ("/api/chat", "/api/generate"):
                    self._send(404, {"error": f"not found: {self.path}"})
                    return
                if body.get("model") not in stub.models:
                    self._send(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
                    return
                if self.path == "/api/chat":
                    prompt = "\n\n".join(str(m.get("content", "")) for m in body.get("messages", []))
                else:
                    prompt = str(body.get("prompt", ""))
                options = body.get("options") or {}
                llama, lock = load_llama(stub.model_path)
                start = time.perf_counter_ns()
                try:
                    text, facts = complete_llama(
                        llama, lock, prompt, max_tokens=int(options.get("num_predict", 128)),
                        temperature=float(options.get("temperature", 0.0)), stop=options.get("stop"),
                        json_schema=body.get("format") or None, seed=int(options.get("seed", 0)),
                    )  # fmt: skip
                except LLMError as error:  # reported as Ollama reports a failed request
                    self._send(500, {"error": str(error)})
                    return
                elapsed = time.perf_counter_ns() - start
                answer = {
                    "model": body["model"], "created_at": datetime.now(UTC).isoformat(), "done": True,
                    "done_reason": "length" if facts["finish_reason"] == "length" else "stop",
                    "total_duration": elapsed, "load_duration": 0, "prompt_eval_count": facts["prompt_tokens"],
                    "prompt_eval_duration": 0, "eval_count": facts["completion_tokens"], "eval_duration": elapsed,
                }  # fmt: skip
                if self.path == "/api/chat":
                    answer["message"] = {"role": "assistant", "content": text}
                else:
                    answer["response"] = text
                if body.get("stream", True):
                    self._send(200, answer, ndjson=True)
                else:
                    self._send(200, answer)

            def _embed(self, body: dict[str, Any]) -> None:
                if body.get("model") not in stub.embed_models:
                    self._send(404, {"error": f"model '{body.get('model')}' not found, try pulling it first"})
                    return
                texts = body.get("input", [])
                texts = [texts] if isinstance(texts, str) else list(texts)
                start = time.perf_counter_ns()
                vectors = LocalMiniLM().encode(texts).tolist() if texts else []
                self._send(200, {"model": body["model"], "embeddings": vectors, "load_duration": 0,
                                 "total_duration": time.perf_counter_ns() - start,
                                 "prompt_eval_count": sum(len(t.split()) for t in texts)})  # fmt: skip

            def _send(self, status: int, payload: dict[str, Any], ndjson: bool = False) -> None:
                data = (json.dumps(payload) + ("\n" if ndjson else "")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-ndjson" if ndjson else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ollama-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OllamaStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

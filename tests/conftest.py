"""Shared fixtures: real MovieLens-100K from the package cache, its splits and its item semantics.

Data and embeddings live in the Tandem cache (`TANDEM_HOME`, default ~/.cache/tandem) so they are fetched
and embedded once per machine; everything a test writes (Chroma folders, checkpoints, SQLite) goes to
pytest's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from ground.settings import Settings, get_settings
from tandem.setup import setup
from tools.data import Dataset, Splits, leave_one_out, load
from tools.embeddings import ItemSemantics, item_semantics
from tools.workspace import Workspace


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def ml100k(settings: Settings) -> Dataset:
    return load("ml-100k", settings.data_dir)


@pytest.fixture(scope="session")
def ml100k_splits(ml100k: Dataset, settings: Settings) -> Splits:
    return leave_one_out(ml100k, seed=settings.seed, max_len=settings.max_seq_len)


@pytest.fixture(scope="session")
def ml100k_semantics(ml100k: Dataset, settings: Settings) -> ItemSemantics:
    return item_semantics(ml100k, settings.item_dim, settings.embeddings_dir, progress=False)


@pytest.fixture(scope="session")
def built_index(settings: Settings) -> Workspace:
    """The ML-100K workspace with its Chroma tag index built (once per machine; a no-op when up to date)."""
    ws = Workspace(settings, "ml-100k", progress=False)
    ws.index_for_build().build(ws.dataset.catalog, ws.semantics)
    return ws


@pytest.fixture(scope="session")
def ready(built_index: Workspace) -> Workspace:
    """ML-100K with everything a runtime loads, built by `tandem setup` where missing (encoders, calibrator,
    re-request threshold), as a user would have it after `make demo`."""
    setup(built_index, Console(stderr=True))
    return built_index


@pytest.fixture
def user_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's own prompts folder (TANDEM_PROMPTS_DIR), outside the package; settings re-read around it."""
    folder = tmp_path / "my-prompts"
    monkeypatch.setenv("TANDEM_PROMPTS_DIR", str(folder))
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()

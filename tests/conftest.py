"""Shared fixtures: real MovieLens-100K from the package cache, its splits and its item semantics.

Data and embeddings live in the Tandem cache (`TANDEM_HOME`, default ~/.cache/tandem) so they are fetched
and embedded once per machine; everything a test writes (Chroma folders, checkpoints, SQLite) goes to
pytest's tmp_path.
"""

from __future__ import annotations

import pytest

from tandem.settings import Settings
from tools.data import Dataset, Splits, leave_one_out, load
from tools.embeddings import ItemSemantics, item_semantics


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

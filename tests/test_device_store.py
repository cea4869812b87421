"""The device's SQLite store: history appends are atomic, the semantic cache round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from tools.device_store import CachedSemantics, DeviceStore


def test_history_append_and_reopen(tmp_path):
    path = tmp_path / "device.sqlite"
    store = DeviceStore(path)
    assert store.append("u1", [5, 6], [100, 200]) == 2
    assert store.append("u1", [7]) == 3
    store.close()
    items, ts = DeviceStore(path).history("u1")
    assert items.tolist() == [5, 6, 7] and ts[:2].tolist() == [100, 200]


def test_failed_append_loses_nothing(tmp_path):
    store = DeviceStore(tmp_path / "d.sqlite")
    store.append("u", [1, 2])
    with pytest.raises(ValueError):
        store.append("u", [3, 4], [1])  # misaligned timestamps: the whole append is rolled back
    assert store.history("u")[0].tolist() == [1, 2]


def test_seed_once_and_reset(tmp_path):
    store = DeviceStore(tmp_path / "d.sqlite")
    store.seed_history("u", np.array([1, 2, 3]), np.array([1, 2, 3]))
    store.seed_history("u", np.array([9]), np.array([9]))
    assert store.history("u")[0].tolist() == [1, 2, 3]
    store.store("u", CachedSemantics(e_sem=[0.1, 0.2], candidates=[4], candidate_scores=[0.5], history_len=3))
    assert store.cached("u").candidates == [4]
    store.reset("u")
    assert store.cached("u") is None and not len(store.history("u")[0])

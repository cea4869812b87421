"""The device's local SQLite store: each user's interaction history and the cached cloud semantics.

Raw history lives here and nowhere else; nothing in this module talks to the cloud. Every write is one
transaction, so a crash in the middle of a request loses no history that was already recorded.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    user TEXT NOT NULL, seq INTEGER NOT NULL, item_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (user, seq)
);
CREATE TABLE IF NOT EXISTS semantic_cache (user TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cleared (user TEXT PRIMARY KEY);
"""


def query_key(query: str) -> str:
    """The cache key of a query: lower-cased words (a new intent invalidates cached semantics)."""
    return " ".join(query.lower().split())


class CachedSemantics(BaseModel):
    """What the device keeps from the cloud's last answer for a user (SCaLRec's cached semantics)."""

    e_sem: list[float] = Field(description="Semantic user embedding of CDA4Rec Eq. 2, in item space.")
    candidates: list[int] = Field(description="Cloud candidate ids, best first (CDA4Rec Eq. 3).")
    candidate_scores: list[float]
    history_len: int = Field(description="How many of the user's interactions the cloud's abstract covered.")
    plan: dict = Field(default_factory=dict, description="The plan the cloud used (JSON).")
    query_key: str = Field("", description="Normalised raw query the semantics answered (kept on the device).")
    created_at: float = Field(default_factory=time.time)


class DeviceStore:
    """SQLite-backed history and semantic cache, safe to share between graph threads."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    # -- history -------------------------------------------------------------------------------------
    def history(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, timestamps) of `user`, oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT item_id, ts FROM history WHERE user = ? ORDER BY seq", (user,)).fetchall()
        items = np.array([r[0] for r in rows], dtype=np.int64)
        stamps = np.array([r[1] for r in rows], dtype=np.int64)
        return items, stamps

    def append(self, user: str, items: Iterable[int], timestamps: Iterable[int] | None = None) -> int:
        """Append interactions in one transaction; returns the new history length."""
        items = [int(i) for i in items]
        stamps = list(timestamps) if timestamps is not None else [int(time.time())] * len(items)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                (start,) = self._conn.execute("SELECT COUNT(*) FROM history WHERE user = ?", (user,)).fetchone()
                self._conn.executemany(
                    "INSERT INTO history (user, seq, item_id, ts) VALUES (?, ?, ?, ?)",
                    [(user, start + k, item, int(ts)) for k, (item, ts) in enumerate(zip(items, stamps, strict=True))],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return start + len(items)

    def seed_history(self, user: str, items: np.ndarray, timestamps: np.ndarray) -> None:
        """Load a user's history from a data set once (no-op when the device already has one)."""
        if not len(self.history(user)[0]):
            self.append(user, items.tolist(), timestamps.tolist())

    def reset(self, user: str) -> None:
        """Forget a user's history and cache; the data set's ratings are not loaded again (`was_reset`)."""
        with self._lock:
            self._conn.execute("DELETE FROM history WHERE user = ?", (user,))
            self._conn.execute("DELETE FROM semantic_cache WHERE user = ?", (user,))
            self._conn.execute("INSERT OR IGNORE INTO cleared (user) VALUES (?)", (user,))

    def was_reset(self, user: str) -> bool:
        """Whether the user cleared their history on this device (then it starts empty, never from a data set)."""
        with self._lock:
            return self._conn.execute("SELECT 1 FROM cleared WHERE user = ?", (user,)).fetchone() is not None

    # -- semantic cache ------------------------------------------------------------------------------
    def cached(self, user: str) -> CachedSemantics | None:
        with self._lock:
            row = self._conn.execute("SELECT entry FROM semantic_cache WHERE user = ?", (user,)).fetchone()
        return CachedSemantics.model_validate(json.loads(row[0])) if row else None

    def store(self, user: str, entry: CachedSemantics) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO semantic_cache (user, entry) VALUES (?, ?) "
                "ON CONFLICT(user) DO UPDATE SET entry = excluded.entry",
                (user, entry.model_dump_json()),
            )

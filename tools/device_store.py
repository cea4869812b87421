"""The device's local SQLite store: each user's interaction history and the cached cloud semantics.

Raw history lives here and nowhere else; nothing in this module talks to the cloud. Every write is one
transaction, so a crash in the middle of a request loses no history that was already recorded; how the file
is opened, locked, retried and repaired is `tools.sqlite_files`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, Field

from tools.sqlite_files import open_database, retry

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    user TEXT NOT NULL, seq INTEGER NOT NULL, item_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (user, seq)
);
CREATE TABLE IF NOT EXISTS semantic_cache (user TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cleared (user TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS seeded (user TEXT PRIMARY KEY, at INTEGER NOT NULL);
"""
"""`seeded` makes seeding from the data set happen once per user, whatever the number of processes: the row
is written in the same transaction as the history it seeds, and its primary key refuses a second one."""


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
    space: str = Field("", description="The item table e_sem is scored against: empty = Eq. 1's, else the encoder "
                       "space's `TextSpace.table_key`.")
    created_at: float = Field(default_factory=time.time)


class DeviceStore:
    """SQLite-backed history and semantic cache, safe to share between graph threads and between processes.

    Opened by `tools.sqlite_files.open_database` (WAL, busy timeout, corrupt or empty files rebuilt with a
    notice); every write is one `BEGIN IMMEDIATE` transaction, retried when it met a lock; every failure is a
    one-line `StoreError` naming the file. `notices` holds what opening the file had to repair, for the
    caller to show once (`take_notices`).
    """

    def __init__(self, path: Path | str, *, timeout: float = 2.0) -> None:
        self.path = path
        self._conn, self.notices = open_database(path, what="device store", timeout=timeout)
        self._lock = threading.Lock()
        retry(lambda: self._conn.executescript(SCHEMA), path, "creating the device store's tables")

    def close(self) -> None:
        self._conn.close()

    def take_notices(self) -> list[str]:
        """The notices of opening the file, once."""
        notices, self.notices = self.notices, []
        return notices

    def _read(self, query: str, args: tuple, action: str) -> list[tuple]:
        def run() -> list[tuple]:
            with self._lock:
                return self._conn.execute(query, args).fetchall()

        return retry(run, self.path, action)

    def _write(self, work: Callable[[sqlite3.Connection], T], action: str) -> T:
        """Run `work` in one immediate transaction (rolled back whole on any error), retried after a lock."""

        def run() -> T:
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._conn)
                    self._conn.execute("COMMIT")
                    return result
                except BaseException:
                    if self._conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
                        try:
                            self._conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    raise

        return retry(run, self.path, action)

    # -- history -------------------------------------------------------------------------------------
    def history(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, timestamps) of `user`, oldest first."""
        rows = self._read("SELECT item_id, ts FROM history WHERE user = ? ORDER BY seq", (user,),
                          f"reading the history of user {user!r}")  # fmt: skip
        items = np.array([r[0] for r in rows], dtype=np.int64)
        stamps = np.array([r[1] for r in rows], dtype=np.int64)
        return items, stamps

    @staticmethod
    def _insert(conn: sqlite3.Connection, user: str, items: list[int], stamps: list[int]) -> int:
        (start,) = conn.execute("SELECT COUNT(*) FROM history WHERE user = ?", (user,)).fetchone()
        conn.executemany(
            "INSERT INTO history (user, seq, item_id, ts) VALUES (?, ?, ?, ?)",
            [(user, start + k, item, int(ts)) for k, (item, ts) in enumerate(zip(items, stamps, strict=True))],
        )
        return start + len(items)

    def append(self, user: str, items: Iterable[int], timestamps: Iterable[int] | None = None) -> int:
        """Append interactions in one transaction; returns the new history length."""
        items = [int(i) for i in items]
        stamps = [int(t) for t in timestamps] if timestamps is not None else [int(time.time())] * len(items)
        return self._write(lambda conn: self._insert(conn, user, items, stamps),
                           f"saving {len(items)} interaction(s) of user {user!r}")  # fmt: skip

    def seed_history(self, user: str, items: np.ndarray, timestamps: np.ndarray) -> bool:
        """Load a user's history from a data set once; False when it was seeded or has a history already.

        The check and the insert are one transaction, and the `seeded` row's primary key refuses a second
        seeding even from another process.
        """

        def seed(conn: sqlite3.Connection) -> bool:
            if conn.execute("SELECT 1 FROM history WHERE user = ? LIMIT 1", (user,)).fetchone():
                return False
            claimed = conn.execute("INSERT OR IGNORE INTO seeded (user, at) VALUES (?, ?)", (user, int(time.time())))
            if claimed.rowcount == 0:
                return False
            self._insert(conn, user, [int(i) for i in items], [int(t) for t in timestamps])
            return True

        return self._write(seed, f"seeding the history of user {user!r}")

    def reset(self, user: str) -> None:
        """Forget a user's history and cached semantics (one transaction). The data set's ratings are not loaded
        again: the user stays marked as seeded, and as cleared (`was_reset`)."""

        def forget(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM history WHERE user = ?", (user,))
            conn.execute("DELETE FROM semantic_cache WHERE user = ?", (user,))
            conn.execute("INSERT OR IGNORE INTO seeded (user, at) VALUES (?, ?)", (user, int(time.time())))
            conn.execute("INSERT OR IGNORE INTO cleared (user) VALUES (?)", (user,))

        self._write(forget, f"forgetting user {user!r}")

    def was_reset(self, user: str) -> bool:
        """Whether the user cleared their history on this device (then it starts empty, never from a data set)."""
        rows = self._read("SELECT 1 FROM cleared WHERE user = ?", (user,), f"reading the reset mark of user {user!r}")
        return bool(rows)

    # -- semantic cache ------------------------------------------------------------------------------
    def cached(self, user: str) -> CachedSemantics | None:
        """The cached semantics of `user`; an entry that no longer parses counts as no entry."""
        rows = self._read("SELECT entry FROM semantic_cache WHERE user = ?", (user,), f"reading the cache of {user!r}")
        if not rows:
            return None
        try:
            return CachedSemantics.model_validate(json.loads(rows[0][0]))
        except ValueError:
            return None

    def store(self, user: str, entry: CachedSemantics) -> None:
        upsert = ("INSERT INTO semantic_cache (user, entry) VALUES (?, ?) "
                  "ON CONFLICT(user) DO UPDATE SET entry = excluded.entry")  # fmt: skip
        payload = entry.model_dump_json()
        self._write(lambda conn: conn.execute(upsert, (user, payload)), f"caching the cloud's answer for user {user!r}")

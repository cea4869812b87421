"""Local SQLite files opened the way trusted systems use SQLite: WAL, a busy timeout, retries, named failures.

- WAL journal: readers never wait for a writer, and a crash loses at most the transaction in flight.
- Busy timeout (`Settings.db_timeout`) plus a few retries of a whole transaction that still met a lock.
- A file that is not a database or fails `PRAGMA quick_check` is moved aside as `<file>.corrupt-<timestamp>`
  (with its -wal and -shm companions) and rebuilt empty; an empty (0-byte) file is rebuilt too. Either way
  the caller gets a notice to show: nothing is silently replaced.
- Every SQLite failure becomes a one-line `StoreError` naming the file and the cause: locked by another
  process, disk full, read-only, I/O error, corrupt.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ground.errors import StoreError

T = TypeVar("T")
ATTEMPTS = 3
"""Tries of one transaction that met a lock (each waits up to the busy timeout first)."""
BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (extended codes folded), None when the driver gave none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_busy(exc: sqlite3.Error) -> bool:
    return primary_code(exc) in BUSY_CODES or "locked" in str(exc) or "busy" in str(exc)


def store_error(exc: sqlite3.Error, path: Path | str, action: str) -> StoreError:
    """The one-line error for a failed SQLite operation on `path` (`action` says what was being done)."""
    code = primary_code(exc)
    if code == sqlite3.SQLITE_FULL:
        cause = "the disk is full"
    elif is_busy(exc):
        cause = "the file is locked by another process (try again when it finishes)"
    elif code == sqlite3.SQLITE_READONLY:
        cause = "the file is read-only"
    elif code in CORRUPT_CODES:
        cause = "the file is corrupt (it is moved aside and rebuilt when Tandem next opens it)"
    elif code == sqlite3.SQLITE_IOERR:
        cause = f"disk I/O error ({exc})"
    elif code == sqlite3.SQLITE_CANTOPEN:
        cause = "the file cannot be opened (check the folder exists and is writable)"
    else:
        cause = str(exc)
    return StoreError(f"{action} failed in {path}: {cause}")


def retry(operation: Callable[[], T], path: Path | str, action: str, attempts: int = ATTEMPTS) -> T:
    """Run `operation` (one whole transaction), again after a short pause when it met a lock."""
    for attempt in range(attempts):
        try:
            return operation()
        except sqlite3.Error as exc:
            if is_busy(exc) and attempt < attempts - 1:
                time.sleep(0.05 * 2**attempt)
                continue
            raise store_error(exc, path, action) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _connect(path: Path, timeout: float, isolation_level: str | None) -> sqlite3.Connection:
    return sqlite3.connect(str(path), timeout=timeout, check_same_thread=False, isolation_level=isolation_level)


def _check(conn: sqlite3.Connection) -> str | None:
    """Why the database is unusable (None: it is fine). Locks and full disks raise instead."""
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if primary_code(exc) in CORRUPT_CODES or (primary_code(exc) is None and not is_busy(exc)):
            return str(exc)
        raise
    return None if verdict == "ok" else str(verdict)


def move_aside(path: Path) -> Path:
    """Rename a bad database file (and its -wal/-shm companions) to `<name>.corrupt-<timestamp>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target


def open_database(
    path: Path | str, *, what: str, timeout: float = 2.0, isolation_level: str | None = None
) -> tuple[sqlite3.Connection, list[str]]:
    """Open (or create) the SQLite file `path` in WAL mode; returns the connection and notices to show.

    `what` names the file for people ("device store", "chat sessions file").
    """
    if str(path) == ":memory:":
        return _connect(Path(":memory:"), timeout, isolation_level), []
    path = Path(path)
    notices: list[str] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of the {what} {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise StoreError(f"the {what} {path} is a folder, not a file")
    if path.is_file() and path.stat().st_size == 0 and not path.with_name(path.name + "-wal").is_file():
        notices.append(f"the {what} {path} was empty (0 bytes): it was rebuilt, earlier contents are not there")
    try:
        conn = _connect(path, timeout, isolation_level)
        reason = _check(conn)
        if reason is not None:
            conn.close()
            target = move_aside(path)
            notices.append(f"the {what} {path} was corrupt ({reason}): moved to {target.name} and rebuilt empty")
            conn = _connect(path, timeout, isolation_level)
        retry(lambda: conn.execute("PRAGMA journal_mode=WAL"), path, f"opening the {what}")
    except sqlite3.Error as exc:
        raise store_error(exc, path, f"opening the {what}") from None
    return conn, notices

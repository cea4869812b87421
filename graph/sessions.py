"""Chat sessions on disk: LangGraph's SQLite checkpointer, opened and written the way `tools.sqlite_files` says.

A chat turn's answer is computed before its checkpoint is written. When the sessions file cannot take the
write (locked by another process past the busy timeout and retries, disk full), the turn is still answered:
the failure is kept in `failures` for the chat to say in one line, and the session simply lacks that turn.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

from ground.errors import StoreError
from tools.sqlite_files import open_database, retry


class SessionSaver(SqliteSaver):
    """`SqliteSaver` whose writes retry after a lock and, when they still fail, are reported instead of raised."""

    def __init__(self, conn: sqlite3.Connection, path: Path, serde: JsonPlusSerializer, notices: list[str]) -> None:
        super().__init__(conn, serde=serde)
        self.path = path
        self.notices = notices
        self.failures: list[str] = []

    def _saved(self, operation: Any, action: str) -> bool:
        try:
            retry(operation, self.path, action)
            return True
        except StoreError as exc:
            try:
                if self.conn.in_transaction:
                    self.conn.rollback()
            except sqlite3.Error:
                pass
            if str(exc) not in self.failures:
                self.failures.append(str(exc))
            return False

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        saved: list[Any] = []
        self._saved(lambda: saved.append(SqliteSaver.put(self, config, checkpoint, metadata, new_versions)),
                    "saving this chat turn")  # fmt: skip
        if saved:
            return saved[0]
        return {"configurable": {"thread_id": config["configurable"]["thread_id"],
                                 "checkpoint_ns": config["configurable"].get("checkpoint_ns", ""),
                                 "checkpoint_id": checkpoint["id"]}}  # fmt: skip

    def put_writes(self, config: Any, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        self._saved(lambda: SqliteSaver.put_writes(self, config, writes, task_id, task_path), "saving this chat turn")

    def take_failures(self) -> list[str]:
        """The write failures since the last call, once each."""
        failures, self.failures = self.failures, []
        return failures


def open_sessions(path: Path, allowed: list[tuple[str, str]], timeout: float = 2.0) -> SessionSaver:
    """The sessions file at `path` (created, or moved aside and rebuilt when corrupt, with a notice)."""
    conn, notices = open_database(path, what="chat sessions file", timeout=timeout, isolation_level="")
    return SessionSaver(conn, path, JsonPlusSerializer(allowed_msgpack_modules=allowed), notices)

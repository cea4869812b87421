"""SQLite faults on the device: a lock held by another real process, corrupt and empty files, two processes
seeding the same user, and a full disk (a real tmpfs when this machine lets the tests mount one).

The device store and the chat sessions file must lose nothing, name the file and the cause in one line, and
never keep a computed answer from the user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest
from langgraph.graph import END, START, StateGraph

from graph.run import sqlite_checkpointer
from ground.errors import StoreError
from tests.faults import PYTHON, ROOT, device_home, tandem
from tools.device_store import CachedSemantics, DeviceStore

LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # the write lock, held until stdin closes
    print("locked", flush=True)
    sys.stdin.read()
    conn.execute("ROLLBACK")
    """
)


@contextlib.contextmanager
def lock_held_by_another_process(path: Path):
    """Another real process holding `path`'s write lock for the duration of the block."""
    locker = subprocess.Popen([PYTHON, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield locker
    finally:
        locker.stdin.close()
        locker.wait(timeout=30)


# ---------------------------------------------------------------------------------------------- locks


def test_lock_held_by_another_process_is_named_and_loses_nothing(tmp_path):
    path = tmp_path / "device.sqlite"
    store = DeviceStore(path, timeout=0.2)
    store.append("u", [1, 2], [10, 20])
    with lock_held_by_another_process(path):
        start = time.monotonic()
        with pytest.raises(StoreError, match="locked by another process") as failure:
            store.append("u", [3])
        assert time.monotonic() - start < 10  # busy timeout and a few retries, not a hang
        assert str(path) in str(failure.value) and "\n" not in str(failure.value)
        assert store.history("u")[0].tolist() == [1, 2]  # WAL: reading goes on while another process writes
    assert store.append("u", [3]) == 3  # the lock is gone: the same write succeeds
    assert DeviceStore(path).history("u")[0].tolist() == [1, 2, 3]


class _Turn(TypedDict):
    n: int


def test_session_turn_answered_when_the_sessions_file_is_locked(tmp_path):
    path = tmp_path / "sessions.sqlite"
    saver = sqlite_checkpointer(path, timeout=0.2)
    builder = StateGraph(_Turn)
    builder.add_node("inc", lambda state: {"n": state["n"] + 1})
    builder.add_edge(START, "inc")
    builder.add_edge("inc", END)
    graph = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"n": 1}, config)["n"] == 2 and not saver.take_failures()
    with lock_held_by_another_process(path):
        assert graph.invoke({"n": 5}, config)["n"] == 6  # the answer is computed and returned
        failures = saver.take_failures()
    assert failures and "locked by another process" in failures[0] and str(path) in failures[0]
    assert graph.invoke({"n": 7}, config)["n"] == 8 and not saver.take_failures()
    assert graph.get_state(config).values["n"] == 8


def test_recommend_shows_its_list_when_the_store_is_locked(tmp_path):
    home = device_home(tmp_path)
    store_path = home / "device" / "ml-100k.sqlite"
    DeviceStore(store_path).close()
    with lock_held_by_another_process(store_path):
        done = tandem("recommend", "--user", "196", "--query", "a comedy", "--planner", "rule", home=home,
                      TANDEM_DB_TIMEOUT="0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "recommendations" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert "locked by another process" in done.stdout  # said, in a warning line
    assert len(DeviceStore(store_path).history("196")[0]) == 0  # nothing half-written


def test_chat_like_under_a_lock_keeps_the_chat(tmp_path):
    home = device_home(tmp_path)
    store_path = home / "device" / "ml-100k.sqlite"
    store = DeviceStore(store_path)
    store.seed_history("196", np.array([1, 2, 3]), np.array([1, 2, 3]))
    with lock_held_by_another_process(store_path):
        done = tandem("chat", "--user", "196", "--planner", "rule", home=home,
                      stdin="comedy\n/like 1\n/like ²\n/quit\n", TANDEM_DB_TIMEOUT="0.2")  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "recommendations" in out and "Traceback" not in out + done.stderr
    assert "error: saving 1 interaction(s) of user '196' failed" in out and "locked by another process" in out
    assert "/like needs a number" in out  # a superscript digit is not a number
    assert "bye: history saved (3 interactions)" in out  # the chat went on to /quit, nothing lost


# ---------------------------------------------------------------------------------------------- corrupt, empty


@pytest.mark.parametrize("content", [b"definitely not a database " * 200, b"SQLite format 3\x00" + b"\xff" * 5000])
def test_corrupt_store_is_moved_aside_and_rebuilt(tmp_path, content):
    path = tmp_path / "device.sqlite"
    path.write_bytes(content)
    store = DeviceStore(path)
    notices = store.take_notices()
    assert len(notices) == 1 and "corrupt" in notices[0] and str(path) in notices[0]
    aside = list(tmp_path.glob("device.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content and aside[0].name in notices[0]
    assert store.append("u", [4]) == 1 and not store.take_notices()


def test_corrupt_sessions_file_is_moved_aside_and_rebuilt(tmp_path):
    path = tmp_path / "sessions.sqlite"
    path.write_bytes(os.urandom(8192))
    saver = sqlite_checkpointer(path)
    assert any("chat sessions file" in n and "corrupt" in n for n in saver.notices)
    assert list(tmp_path.glob("sessions.sqlite.corrupt-*"))
    assert saver.get_tuple({"configurable": {"thread_id": "x", "checkpoint_ns": ""}}) is None


def test_empty_store_is_rebuilt_with_a_notice(tmp_path):
    path = tmp_path / "device.sqlite"
    path.touch()
    store = DeviceStore(path)
    notices = store.take_notices()
    assert len(notices) == 1 and "empty (0 bytes)" in notices[0] and str(path) in notices[0]
    store.append("u", [1])
    assert not DeviceStore(path).take_notices()  # a healthy file reopens silently


def test_corrupt_store_notice_reaches_the_cli(tmp_path):
    home = device_home(tmp_path)
    (home / "device" / "ml-100k.sqlite").write_bytes(b"garbage" * 1000)
    done = tandem("recommend", "--user", "196", "--planner", "rule", home=home)
    assert done.returncode == 0, done.stderr
    assert "device store" in done.stdout and "was corrupt" in done.stdout and "recommendations" in done.stdout
    assert list((home / "device").glob("ml-100k.sqlite.corrupt-*"))


def test_unparsable_cache_entry_counts_as_no_entry(tmp_path):
    store = DeviceStore(tmp_path / "d.sqlite")
    store.store("u", CachedSemantics(e_sem=[0.1], candidates=[1], candidate_scores=[0.5], history_len=1))
    store._conn.execute("UPDATE semantic_cache SET entry = '{not json'")
    assert store.cached("u") is None


# ---------------------------------------------------------------------------------------------- seeding


SEEDER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tools.device_store import DeviceStore
    path, start, users = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    store = DeviceStore(path, timeout=10)
    while time.time() < start:
        pass
    seeded = sum(store.seed_history(f"u{n}", np.arange(1, 41), np.arange(40)) for n in range(users))
    print(seeded)
    """
)


def test_two_processes_seed_each_user_once(tmp_path):
    path = tmp_path / "device.sqlite"
    DeviceStore(path).close()
    users, start = 30, time.time() + 3
    seeders = [subprocess.Popen([PYTHON, "-c", SEEDER, str(path), str(start), str(users)], stdout=subprocess.PIPE,
                                text=True, cwd=ROOT) for _ in range(2)]  # fmt: skip
    counts = [int(p.communicate(timeout=120)[0].strip()) for p in seeders]
    assert sum(counts) == users  # each user claimed by exactly one process
    store = DeviceStore(path)
    for n in range(users):
        assert store.history(f"u{n}")[0].tolist() == list(range(1, 41))


def test_seeding_is_enforced_by_the_schema(tmp_path):
    store = DeviceStore(tmp_path / "d.sqlite")
    assert store.seed_history("u", np.array([1, 2]), np.array([1, 2]))
    assert not store.seed_history("u", np.array([9]), np.array([9]))
    with pytest.raises(Exception, match="UNIQUE"):
        store._conn.execute("INSERT INTO seeded (user, at) VALUES ('u', 0)")
    store.reset("u")  # a reset keeps the seeding mark: the data set's ratings are not loaded again (#17)
    assert store.was_reset("u") and store.history("u")[0].tolist() == []
    assert not store.seed_history("u", np.array([5]), np.array([5]))
    assert store.history("u")[0].tolist() == []


# ---------------------------------------------------------------------------------------------- disk full


def _fill(store: DeviceStore) -> StoreError:
    batch = list(range(1, 2001))
    for _ in range(10_000):
        try:
            store.append("u", batch)
        except StoreError as exc:
            return exc
    raise AssertionError("the store never filled up")


def test_full_database_is_named_as_such(tmp_path):
    """SQLite's own size limit gives the same SQLITE_FULL as a full disk, on any machine."""
    store = DeviceStore(tmp_path / "d.sqlite")
    store.append("u", [1, 2, 3])
    store._conn.execute("PRAGMA max_page_count = 40")
    failure = _fill(store)
    assert "disk is full" in str(failure) and "cannot rollback" not in str(failure)
    assert len(store.history("u")[0]) % 2000 == 3  # whole batches only: the failed one was rolled back


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_named_and_loses_nothing(small_disk):
    path = small_disk / "device.sqlite"
    store = DeviceStore(path)
    store.append("keep", [7, 8, 9])
    failure = _fill(store)
    assert "disk is full" in str(failure) and str(path) in str(failure) and "cannot rollback" not in str(failure)
    assert store.history("keep")[0].tolist() == [7, 8, 9]
    assert len(store.history("u")[0]) % 2000 == 0
    try:  # the rolled-back batch may have freed a page or two: a small write may fit, or fail the same way
        store.append("keep", [10])
        expected = [7, 8, 9, 10]
    except StoreError as again:
        assert "disk is full" in str(again)
        expected = [7, 8, 9]
    assert store.history("keep")[0].tolist() == expected

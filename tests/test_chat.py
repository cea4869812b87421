"""`tandem chat` driven through a real pseudo-terminal, as a person would use it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.device_store import DeviceStore

TANDEM = str(Path(sys.executable).with_name("tandem"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


class Terminal:
    """A child process on a pty: type lines, wait for text on the screen."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.screen = ""

    def read_until(self, pattern: str, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.screen):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared; screen ends with:\n{self.screen[-2000:]}")
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
                self.screen += ANSI.sub("", chunk).replace("\r", "")
        return self.screen

    def type(self, line: str) -> None:
        self.screen = ""
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


@pytest.fixture
def chat_env(settings, tmp_path, ml100k_semantics):
    from tools.workspace import Workspace

    ws = Workspace(settings, "ml-100k", progress=False)
    ws.index_for_build().build(ws.dataset.catalog, ws.semantics)
    home = tmp_path / "home"
    (home / "device").mkdir(parents=True)
    for sub in ("data", "embeddings", "chroma", "models"):
        (home / sub).symlink_to(settings.home / sub)
    return {**os.environ, "TANDEM_HOME": str(home), "COLUMNS": "140", "LINES": "50", "TERM": "xterm"}, home


@pytest.mark.slow
def test_chat_turns_commands_and_resume(chat_env):
    env, home = chat_env
    term = Terminal([TANDEM, "chat", "--user", "196", "--planner", "rule"], env)
    screen = term.read_until(r"you>")
    session = re.search(r"resume with --session (\w+)", screen).group(1)
    term.type("a funny animated movie")
    screen = term.read_until(r"you>")
    assert "recommendations (source: cloud)" in screen and "plan (" in screen
    term.type("/like 1")
    assert "added" in term.read_until(r"you>")
    term.type("/watched toy story")
    assert "Toy Story" in term.read_until(r"you>")
    term.type("/history")
    assert "history of 196" in term.read_until(r"you>")
    term.type("/plan")
    assert "semantic (Eq. 2)" in term.read_until(r"you>")
    term.type("/like 99")
    assert "needs a number" in term.read_until(r"you>")
    term.type("/nonsense")
    assert "unknown command" in term.read_until(r"you>")
    term.type("/quit")
    assert "history saved" in term.read_until(r"bye")
    assert term.close() == 0
    items, _ = DeviceStore(home / "device" / "ml-100k.sqlite").history("196")
    assert len(items) >= 41  # 39 from the data set + the liked item + Toy Story

    again = Terminal([TANDEM, "chat", "--session", session, "--planner", "rule"], env)
    assert f"resumed session {session}" in again.read_until(r"you>") and "as user 196" in again.screen
    again.type("")  # empty query: recommend from history alone
    assert "recommendations (source:" in again.read_until(r"you>")
    os.write(again.master, b"\x04")  # Ctrl-D
    assert "history saved" in again.read_until(r"bye")
    assert again.close() == 0


def test_unknown_session_is_a_clear_error(chat_env):
    env, _ = chat_env
    done = subprocess.run([TANDEM, "chat", "--session", "nope1234"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "unknown session 'nope1234'" in done.stderr and "Traceback" not in done.stderr

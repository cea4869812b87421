"""Ctrl-C, sent as a real SIGINT to the CLI at several moments: start-up, a request, the chat prompt (on a pty),
a chat request, a training loop. Each time: exit code 130, one line ("interrupted") on stderr, promptly."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time

import pytest

from tandem.interrupts import GRACE
from tests.faults import CLI, PYTHON, ROOT, cli_env, device_home

PROMPT_EXIT = GRACE + 6.0  # seconds from the signal to the exit: the watchdog's grace plus a loaded machine's slack


def interrupt_after(args: list[str], delay: float, home) -> tuple[subprocess.CompletedProcess, float]:
    """Start the CLI, send SIGINT after `delay` seconds; (the finished process, seconds it took to stop)."""
    process = subprocess.Popen([PYTHON, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cli_env(home), cwd=ROOT)  # fmt: skip
    time.sleep(delay)
    if process.poll() is not None:
        out, err = process.communicate()
        pytest.fail(f"finished before the signal (rc {process.returncode}): {err[-500:]}")
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, out, err), time.monotonic() - sent


def assert_interrupted(done: subprocess.CompletedProcess, took: float) -> None:
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == ["interrupted"], done.stderr[-2000:]
    assert took < PROMPT_EXIT


def many_requests(tmp_path, count: int = 400) -> list[str]:
    """`recommend --users FILE` arguments for a batch long enough to be still running at any delay below."""
    batch = tmp_path / "requests.jsonl"
    batch.write_text("".join(f'{{"user": "196", "query": "a funny film for tonight {n}"}}\n' for n in range(count)))
    return ["recommend", "--users", str(batch), "--out", str(tmp_path / "answers.jsonl")]


@pytest.mark.parametrize("delay", [0.3, 1.0, 4.0])
def test_ctrl_c_during_start_up(tmp_path, delay):
    """Imports, settings, data and index loading (then the first requests): no traceback, no swallowed signal."""
    done, took = interrupt_after([*many_requests(tmp_path), "--planner", "rule"], delay, device_home(tmp_path))
    assert_interrupted(done, took)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [9.0, 16.0])
def test_ctrl_c_during_language_model_load_and_planning(tmp_path, delay):
    """The embedded llama.cpp model loading (fd 2 silenced by llama.cpp, log callbacks in C) or planning."""
    done, took = interrupt_after([*many_requests(tmp_path), "--planner", "llm"], delay, device_home(tmp_path))
    assert_interrupted(done, took)


class Terminal:
    """The CLI on a pseudo-terminal, as a person runs `tandem chat`."""

    def __init__(self, args: list[str], home) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([PYTHON, "-c", CLI, *args], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                                        env=cli_env(home, TERM="xterm"), cwd=ROOT)  # fmt: skip
        os.close(slave)
        self.seen = b""

    def wait_for(self, text: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"never saw {text!r}; the terminal showed {self.seen[-800:]!r}")
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the other end closed
                    pass

    def type(self, line: str) -> None:
        os.write(self.master, line.encode())

    def interrupt(self) -> tuple[int, str, float]:
        sent = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        deadline = sent + 120
        while self.process.poll() is None and time.monotonic() < deadline:
            select.select([self.master], [], [], 0.2)
            try:
                self.seen += os.read(self.master, 65536)
            except OSError:
                time.sleep(0.1)
        took = time.monotonic() - sent
        err = self.process.stderr.read().decode()
        os.close(self.master)
        return self.process.wait(timeout=10), err, took


def test_ctrl_c_at_the_chat_prompt(tmp_path):
    term = Terminal(["chat", "--user", "196", "--planner", "rule"], device_home(tmp_path))
    term.wait_for("you>")
    code, err, took = term.interrupt()
    assert code == 130 and err.strip().splitlines() == ["interrupted"], err
    assert took < PROMPT_EXIT


def test_ctrl_c_during_a_chat_request(tmp_path):
    term = Terminal(["chat", "--user", "196", "--planner", "rule"], device_home(tmp_path))
    term.wait_for("you>")
    term.type("a funny film for tonight\n")
    term.wait_for("thinking")  # the status line of a request in flight
    code, err, took = term.interrupt()
    assert code == 130 and err.strip().splitlines() == ["interrupted"], err
    assert took < PROMPT_EXIT


@pytest.mark.slow
def test_ctrl_c_during_a_training_loop(tmp_path):
    out = tmp_path / "sasrec.pt"
    args = ["train", "--encoder", "sasrec", "--epochs", "50", "--threads", "1", "--out", str(out)]
    process = subprocess.Popen([PYTHON, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=cli_env(), cwd=ROOT)  # fmt: skip
    for line in process.stdout:  # the training loop logs each epoch
        if "epoch" in line:
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip().splitlines() == ["interrupted"], err[-2000:]
    assert time.monotonic() - sent < PROMPT_EXIT


def test_ctrl_c_inside_an_import_ends_the_process_instead_of_raising(tmp_path, monkeypatch):
    """An exception raised while a module is imported can cross PyTorch's C++ initialisation and abort the
    process (SIGABRT instead of 130): inside an import the handler ends the process at once; elsewhere it raises."""
    import sys

    from tandem import interrupts

    class Ended(Exception):  # stands in for os._exit, which never returns
        pass

    def exit_now() -> None:
        raise Ended

    monkeypatch.setattr(interrupts, "exit_now", exit_now)
    monkeypatch.setattr(interrupts, "_signalled", type("NeverSignalled", (), {"is_set": bool, "set": bool})())
    module = tmp_path / "module_interrupted_while_imported.py"
    module.write_text("import signal, sys\nfrom tandem import interrupts\n"
                      "assert interrupts._importing(sys._getframe())\n"
                      "interrupts._handle(signal.SIGINT, sys._getframe())\n")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Ended):
        import module_interrupted_while_imported  # noqa: F401
    assert not interrupts._importing(sys._getframe())
    with pytest.raises(interrupts.Interrupted):
        interrupts._handle(signal.SIGINT, sys._getframe())

"""Ctrl-C ends any command promptly: exit code 130 and one line on stderr, whatever the process is doing.

Python's default turns SIGINT into `KeyboardInterrupt`, which fails in three places a CLI cannot control:
click (under typer) catches it and exits quietly, library code may catch it, and an exception raised inside a
C callback (llama.cpp's logging callback runs during model load) is printed as "Exception ignored" and
dropped, so the load carries on and the run exits 0. `install` replaces the handler:

- the first SIGINT raises `Interrupted`, a `BaseException` that no `except Exception` and no click handler
  catches, so `finally` blocks and rollbacks run on the way up; the CLI's `main` prints the one line and ends
  the process with 130 at once (`exit_now`: an interpreter shutdown may take seconds); during an import (a
  C extension's initialisation would turn the exception into a C++ abort) it ends the process at once;
- if that exception is swallowed in a C callback, `sys.unraisablehook` sees it and ends the process there;
- a watchdog thread, woken through `signal.set_wakeup_fd` by Python's C-level handler, ends the process
  `grace` seconds after the signal whatever happens (the main thread stuck in one long C call, where no
  Python handler can run; a library that catches the exception), and a second Ctrl-C ends it at once.

Every path prints the same single line, once.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, NoReturn

EXIT_CODE = 130
MESSAGE = "interrupted"
_announced = threading.Event()
_signalled = threading.Event()
GRACE = 2.0
"""Seconds the main thread has to stop after Ctrl-C before the watchdog ends the process."""
_watcher: threading.Thread | None = None
_stderr_fd: int | None = None
"""A duplicate of the terminal's stderr taken at `install`: llama.cpp points fd 2 at /dev/null while it loads a
model, and the one line must still reach the user."""


class Interrupted(BaseException):  # noqa: N818 (named like KeyboardInterrupt, which it stands in for)
    """Ctrl-C: raised in the main thread by the SIGINT handler installed by `install`."""


def announce() -> None:
    """Write the one line (only once per process), straight to the file descriptor: nothing can fail here."""
    if _announced.is_set():
        return
    _announced.set()
    if threading.current_thread() is threading.main_thread():  # the watchdog must not wait on a stream's lock
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a closed or broken stream must not stop the exit
                pass
    for fd in (_stderr_fd, 2):
        if fd is None:
            continue
        try:
            os.write(fd, f"{MESSAGE}\n".encode())
            return
        except OSError:
            continue


def exit_now() -> NoReturn:
    """End the process at once with code 130 after the one line.

    No interpreter shutdown: finalising llama.cpp, PyTorch and Chroma can take seconds, during which no Python
    thread runs. Nothing is lost by skipping it: every SQLite write is a committed transaction or none.
    """
    announce()
    os._exit(EXIT_CODE)


def _watch(read_fd: int, grace: float) -> None:
    """The watchdog thread: woken by Python's C-level signal handler through the wakeup fd, so it runs even
    while the main thread is inside one long C call (llama.cpp reading a prompt) and cannot run a Python
    handler. The first SIGINT gives the main thread `grace` seconds to stop; a second one ends it now."""
    deadline: float | None = None
    while True:
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:
            exit_now()  # the grace period is over
        data = os.read(read_fd, 64)
        if int(signal.SIGINT) in data:
            if deadline is not None:
                exit_now()
            deadline = time.monotonic() + grace


def _importing(frame: FrameType | None) -> bool:
    """True when the interrupted code runs inside an import (a frame of importlib's bootstrap on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib._bootstrap"):
            return True
        frame = frame.f_back
    return False


def _handle(signum: int, frame: FrameType | None) -> None:
    if _signalled.is_set():
        exit_now()
    _signalled.set()
    if _importing(frame):
        # an exception raised inside an import can cross a C extension's initialisation (PyTorch's), where it
        # becomes a C++ exception and aborts the process (SIGABRT, seen once in a fresh-ci run); an import has
        # nothing to unwind, so the process ends here
        exit_now()
    raise Interrupted()


def _unraisable(default: Any):
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            exit_now()  # Ctrl-C swallowed by a C callback: act on it here
        default(unraisable)

    return hook


def _start_watcher(grace: float) -> None:
    global _watcher
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _watcher = threading.Thread(target=_watch, args=(read_fd, grace), name="tandem-interrupt-watchdog", daemon=True)
    _watcher.start()


def install(grace: float = GRACE) -> None:
    """Route SIGINT through `Interrupted` and the watchdog (a no-op outside the main thread)."""
    global _stderr_fd
    if threading.current_thread() is not threading.main_thread():
        return
    if _stderr_fd is None:
        try:
            _stderr_fd = os.dup(2)
        except OSError:
            _stderr_fd = None
    if _watcher is None:
        _start_watcher(grace)
    signal.signal(signal.SIGINT, _handle)
    if not getattr(sys.unraisablehook, "_tandem", False):
        hook = _unraisable(sys.unraisablehook)
        hook._tandem = True  # type: ignore[attr-defined]
        sys.unraisablehook = hook

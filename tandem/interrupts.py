"""Ctrl-C ends any command promptly: exit code 130 and one line on stderr, whatever the process is doing.

Python's default turns SIGINT into `KeyboardInterrupt`, which fails in three places a CLI cannot control:
click (under typer) catches it and exits quietly, library code may catch it, and an exception raised inside a
C callback (llama.cpp's logging callback runs during model load) is printed as "Exception ignored" and
dropped, so the load carries on and the run exits 0. `install` replaces the handler:

- the first SIGINT raises `Interrupted`, a `BaseException` that no `except Exception` and no click handler
  catches; the CLI's `main` prints the one line and exits 130 (SQLite rolls back what was not committed);
- if that exception is swallowed in a C callback, `sys.unraisablehook` sees it and ends the process there;
- a watchdog ends the process `grace` seconds after the signal whatever happens (a worker thread that does
  not stop, a library that catches the exception), and a second Ctrl-C ends it at once.

Every path prints the same single line, once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

EXIT_CODE = 130
MESSAGE = "interrupted"
_announced = threading.Event()
_signalled = threading.Event()


class Interrupted(BaseException):  # noqa: N818 (named like KeyboardInterrupt, which it stands in for)
    """Ctrl-C: raised in the main thread by the SIGINT handler installed by `install`."""


def announce() -> None:
    """Write the one line (only once per process), straight to the file descriptor: nothing can fail here."""
    if _announced.is_set():
        return
    _announced.set()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream must not stop the exit
            pass
    try:
        os.write(2, f"{MESSAGE}\n".encode())
    except OSError:
        pass


def exit_now() -> None:
    """End the process at once with code 130 after the one line (no cleanup: SQLite keeps its last commit)."""
    announce()
    os._exit(EXIT_CODE)


def _watchdog(grace: float) -> None:
    timer = threading.Timer(grace, exit_now)
    timer.daemon = True
    timer.start()


def _handler(grace: float):
    def handle(signum: int, frame: FrameType | None) -> None:
        if _signalled.is_set():
            exit_now()
        _signalled.set()
        _watchdog(grace)
        raise Interrupted()

    return handle


def _unraisable(default: Any):
    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            exit_now()  # Ctrl-C swallowed by a C callback: act on it here
        default(unraisable)

    return hook


def install(grace: float = 3.0) -> None:
    """Route SIGINT through `Interrupted` and the watchdog (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler(grace))
    if not getattr(sys.unraisablehook, "_tandem", False):
        hook = _unraisable(sys.unraisablehook)
        hook._tandem = True  # type: ignore[attr-defined]
        sys.unraisablehook = hook

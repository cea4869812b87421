"""One long-lived thread for the PyTorch work of requests (the cloud's Eq. 2 text encoder, the device's Eq. 4
encoder and Eq. 6 scores).

PyTorch on the CPU parallelises an operation with OpenMP, and an OpenMP team belongs to the thread that starts
it. A request touches torch from several threads: the in-process transport runs each cloud call on a thread of
its own, and LangGraph runs parallel branches on threads it makes for each request. Measured with the packaged
MiniLM on a query and a summary (2 cores, 2 torch threads): 9.1 ms on one thread, 16.3 ms on a fresh thread per
call, and 17 ms on EVERY thread once two long-lived threads have used torch, because libgomp counts more team
threads than cores and stops spinning between parallel regions. Running every request-time torch call on this
one thread keeps one team, at full speed, and serialises the device's and the cloud's work, which on a shared
CPU is what the cores can do anyway.

`on_inference_thread(fn, ...)` runs `fn` there and returns its result (or raises its exception); a call made on
that thread runs directly. The thread is a daemon, started on first use, so it never keeps a process alive.
Thread-local torch state (grad mode, autocast) is the thread's own: callees set what they need themselves.

One thread using torch is not enough: PyTorch gives every thread, on its first parallel operation, the process-wide
thread count of the moment, so the runtime's loading on the main thread, or a LangGraph worker's first small tensor
op, starts a second team, and from then on every team waits passively. `dedicate_torch_threads()` (called by
`TandemRuntime.create`, so by every entry point that serves requests) gives the inference thread the cores and
makes one thread the count every other thread takes. Measured on ML-1M (`evals.bench_graph`, rule planner, 2 cores):
Eq. 2's MiniLM on a request's summary 14-15 ms on the inference thread before, 7 ms after (its speed on a
process's only thread), the graph request p50 33-34 -> 25.5-26.6 ms.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_tasks: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple, dict]] = queue.SimpleQueue()
_worker: threading.Thread | None = None
_dedicated: int | None = None  # the inference thread's torch threads once `dedicate_torch_threads` gave them
_start_lock = threading.Lock()


def _serve() -> None:
    while True:
        future, fn, args, kwargs = _tasks.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            future.set_exception(exc)


def _ensure_worker() -> threading.Thread:
    global _worker
    with _start_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_serve, name="tandem-inference", daemon=True)
            _worker.start()
        return _worker


def dedicate_torch_threads(threads: int | None = None) -> int:
    """Give request-time torch work `threads` intra-op threads (default: the calling thread's count) on the inference
    thread, and make 1 the count every other thread of the process takes; returns the inference thread's count.

    Call it before the process does torch work on other threads (a team, once started, stays): the caller's own
    torch work then runs on one thread too, which is what a process that serves requests wants. Batch work
    (training, evaluations) should not call it. Called again without `threads`, it keeps the count it gave.
    """
    import torch

    global _dedicated
    count = max(1, threads or _dedicated or torch.get_num_threads())
    on_inference_thread(_claim_threads, count)
    torch.get_num_threads()  # the caller's lazy initialisation happens now, at the count it already had
    torch.set_num_threads(1)  # the caller, and every thread that meets torch from now on
    _dedicated = count
    return count


def _claim_threads(count: int) -> None:
    import torch

    torch.get_num_threads()  # PyTorch's lazy per-thread initialisation, so it can no longer reset the count below
    torch.set_num_threads(count)


def submit_to_inference_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
    """Queue `fn(*args, **kwargs)` on the inference thread and return at once: its result comes as a future, which
    several callers may wait on (never from the inference thread itself: `in_inference_thread`)."""
    _ensure_worker()
    future: Future[T] = Future()
    _tasks.put((future, fn, args, kwargs))
    return future


def in_inference_thread() -> bool:
    """Whether the calling thread is the inference thread (where waiting on queued work would wait forever)."""
    return threading.current_thread() is _worker


def on_inference_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` on the process's inference thread and return what it returns."""
    if threading.current_thread() is _ensure_worker():
        return fn(*args, **kwargs)
    return submit_to_inference_thread(fn, *args, **kwargs).result()

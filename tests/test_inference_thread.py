"""`tools.inference_thread`: every request-time torch call runs on one long-lived thread."""

from __future__ import annotations

import threading

import pytest

from tools.inference_thread import on_inference_thread


def test_calls_run_on_one_daemon_thread_and_return_their_result():
    seen = {on_inference_thread(lambda: threading.get_ident()) for _ in range(5)}
    assert len(seen) == 1 and threading.get_ident() not in seen
    worker = next(t for t in threading.enumerate() if t.ident in seen)
    assert worker.daemon and worker.name == "tandem-inference"
    assert on_inference_thread(lambda a, b=0: a + b, 2, b=3) == 5


def test_an_exception_reaches_the_caller_and_the_thread_keeps_serving():
    def fail() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        on_inference_thread(fail)
    assert on_inference_thread(lambda: "still here") == "still here"


def test_a_call_from_the_thread_itself_runs_directly():
    """Re-entrant use (an encoder calling a helper that also dispatches) must not wait on itself."""
    outer = on_inference_thread(lambda: (threading.get_ident(), on_inference_thread(threading.get_ident)))
    assert outer[0] == outer[1]


def test_callers_on_many_threads_are_served_in_turn():
    results: list[int] = []
    lock = threading.Lock()

    def call(n: int) -> None:
        value = on_inference_thread(lambda: n * n)
        with lock:
            results.append(value)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(results) == [n * n for n in range(16)]


DEDICATED = """
import threading, torch
from tools.inference_thread import dedicate_torch_threads, on_inference_thread
torch.set_num_threads(2)
count = dedicate_torch_threads()
later = {}
def first_use():  # a thread that meets torch only now, as a LangGraph worker does
    torch.ones(100_000).add_(1)
    later["threads"] = torch.get_num_threads()
worker = threading.Thread(target=first_use)
worker.start(); worker.join()
torch.ones(100_000).add_(1)
print(count, on_inference_thread(torch.get_num_threads), torch.get_num_threads(), later["threads"])
"""


def test_dedicated_threads_go_to_the_inference_thread_and_every_other_thread_gets_one():
    """In a fresh process (thread counts are process state): the inference thread keeps the count it was given,
    the caller and a thread that first uses torch afterwards run on one, so no second team ever starts."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", DEDICATED], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["2", "2", "1", "1"]

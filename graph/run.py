"""Run one request through the compiled graph: the one entry point of the CLI, the chat and the benchmarks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agents.device.agent import CacheVerdict, Precision
from graph.builder import graph as default_graph
from graph.context import TandemContext
from graph.runtime import TandemRuntime
from graph.sessions import SessionSaver, open_sessions
from graph.state import RequestInput, RequestOutput, checked_request
from tools.constraints import RequestConstraints
from tools.protocol import Abstract, Crossing, PlanResult

CHECKPOINTED_TYPES = (Abstract, PlanResult, CacheVerdict, Precision, Crossing, RequestConstraints)
"""The typed models a request's state holds, allowed back out of a checkpoint (nothing else is)."""
def request_input(user: str, query: str = "", **options: Any) -> RequestInput:
    """A request as the graph takes it, checked early (the graph's first node checks it again for callers that
    reach the graph directly, such as LangGraph's API server)."""
    state = RequestInput(user=user, query=query, **options)  # type: ignore[typeddict-item]
    checked_request(state)
    return state


def sqlite_checkpointer(path: Path, timeout: float = 2.0) -> SessionSaver:
    """LangGraph's SQLite checkpointer for chat threads, deserialising only the state's own types (see
    `graph.sessions` for how a failed write is reported instead of ending the chat)."""
    return open_sessions(path, [(t.__module__, t.__name__) for t in CHECKPOINTED_TYPES], timeout=timeout)


log = logging.getLogger("tandem.graph")


def recommend(
    runtime: TandemRuntime,
    user: str,
    query: str = "",
    *,
    explain: bool = False,
    top_k: int = 10,
    history: list[int] | None = None,
    history_ts: list[int] | None = None,
    use_cache: bool = True,
    allow_rerequest: bool = True,
    graph: Any = None,
    thread_id: str | None = None,
    seeds: list[int] | None = None,
    avoid: list[int] | None = None,
) -> RequestOutput:
    """One recommendation request; returns the request's output (`RequestOutput`).

    `history` overrides the device store (evals pass each instance's history); `graph` may be a graph
    compiled with a checkpointer (chat sessions), in which case `thread_id` names the session. `seeds` and
    `avoid` are a conversation's items to rank toward and to leave out (`tools.conversation`).
    """
    state = request_input(user, query, explain=explain, top_k=top_k, use_cache=use_cache,
                          allow_rerequest=allow_rerequest, history=history, history_ts=history_ts,
                          seeds=seeds or [], avoid=avoid or [], cache_scope=runtime.cache_scope)  # fmt: skip
    config: dict[str, Any] = {"recursion_limit": 50}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    output = (graph or default_graph).invoke(state, config=config, context=TandemContext(runtime=runtime))
    if log.isEnabledFor(logging.DEBUG):
        timings = ", ".join(f"{t['node']} {t['seconds'] * 1000:.1f} ms" for t in output.get("timings") or [])
        crossings = output.get("crossings") or []
        log.debug("user %r: route %s; %s; %d crossing(s), %d B up, %d B down", user,
                  " -> ".join(output.get("route") or []), timings or "no timings", len(crossings),
                  sum(c.bytes_up for c in crossings), sum(c.bytes_down for c in crossings))  # fmt: skip
    return output

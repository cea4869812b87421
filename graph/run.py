"""Run one request through the compiled graph with a runtime: the one entry point for CLI, chat and evals."""

from __future__ import annotations

from typing import Any

from graph.builder import builder
from graph.runtime import TandemRuntime

_compiled = builder.compile(name="tandem")


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
) -> dict[str, Any]:
    """One recommendation request; returns the final DeviceState as a dict.

    `history` overrides the device store (evals pass each instance's history); `graph` may be a graph
    compiled with a checkpointer (chat sessions), in which case `thread_id` names the session.
    """
    state: dict[str, Any] = {"user": user, "query": query, "explain": explain, "top_k": top_k,
                             "use_cache": use_cache, "allow_rerequest": allow_rerequest}  # fmt: skip
    if history is not None:
        stamps = list(history_ts) if history_ts is not None else list(range(len(history)))
        state["given_history"] = {"items": list(history), "timestamps": stamps}
    configurable: dict[str, Any] = {"runtime": runtime}
    if thread_id is not None:
        configurable["thread_id"] = thread_id
    return (graph or _compiled).invoke(state, config={"configurable": configurable, "recursion_limit": 50})

"""The Tandem graph: device and cloud agents in one LangGraph StateGraph (CDA4Rec, LSC4Rec, SCaLRec).

Reads top to bottom: node functions, routers, then `builder` and `graph`. One request:

    device_history -> device_cache_check --reliable--> device_use_cache ----------------------+
                              |stale/miss                                                      |
                              v                                                                v
    device_abstract -> cloud_plan --ok--> cloud_semantic  +  device_sasrec | device_surge -> device_rank
          ^                 |cloud down -> device_calibrate (cache) | device_fallback (no cache)   |
          |                                                                                        v
          +------------------------------ device_rerequest <--inconsistent-- (LSC4Rec Eq. 11-12)
                                                                   device_explain (if asked) -> END

Cloud nodes take the narrow `CloudInput` schema (abstract and plan only) and talk to the cloud through the
boundary, which serialises and measures every message. The runtime (models, store, boundary) arrives in
`config["configurable"]["runtime"]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from agents.device import Abstract
from graph.boundary import CloudUnavailableError
from graph.cloud_service import PlanRequest, SemanticRequest, SemanticResponse
from graph.runtime import TandemRuntime
from graph.state import CloudInput, DeviceState
from tools.device_store import CachedSemantics, query_key
from tools.fusion import rank_candidates
from tools.plan import Plan, PlanResult

NodeFn = Callable[[dict, TandemRuntime], dict[str, Any]]


def runtime_of(config: RunnableConfig) -> TandemRuntime:
    runtime = (config.get("configurable") or {}).get("runtime")
    if runtime is None:
        raise RuntimeError('run the graph with config={"configurable": {"runtime": TandemRuntime.create(...)}}')
    return runtime


def node(name: str) -> Callable[[NodeFn], Callable[[dict, RunnableConfig], dict]]:
    """Wrap a node: hand it the runtime, and record its name in `route` and its wall time in `timings`."""

    def wrap(fn: NodeFn) -> Callable[[dict, RunnableConfig], dict]:
        # no functools.wraps: LangGraph reads the signature to decide whether to pass `config`
        def run(state: dict, config: RunnableConfig) -> dict:
            start = time.perf_counter()
            update = fn(state, runtime_of(config))
            update["route"] = [name, *update.get("route", [])]
            update["timings"] = [{"node": name, "seconds": time.perf_counter() - start}]
            return update

        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return run

    return wrap


# ---------------------------------------------------------------------------------------------- device

FRESH_REQUEST: dict[str, Any] = {
    "rerequests": 0, "cloud_failed": False, "e_str": None, "e_sem": None, "plan_result": None, "abstract": None,
    "candidates": [], "candidate_scores": [], "ranked": [], "ranked_scores": [], "explanation": None,
    "inconsistency": None, "source": None, "cache": {}, "precision": None,
}  # fmt: skip
"""Per-request fields cleared at the start of every turn (a chat thread keeps its state between turns)."""


@node("device_history")
def device_history(state: DeviceState, rt: TandemRuntime) -> dict:
    """Load the user's local history (seeded once from the data set) unless the caller passed one."""
    limit = rt.settings.max_seq_len
    if state.get("given_history") is not None:
        given = state["given_history"]
        history, stamps = list(given["items"]), list(given.get("timestamps") or range(len(given["items"])))
    else:
        items, ts = rt.store.history(state["user"])
        if not len(items) and state["user"] in rt.workspace.dataset.user_names:
            dataset = rt.workspace.dataset
            user = dataset.user_index(state["user"])
            rt.store.seed_history(state["user"], dataset.sequences[user], dataset.timestamps[user])
            items, ts = rt.store.history(state["user"])
        history, stamps = items.tolist(), ts.tolist()
    warnings = []
    if len(history) > limit:
        warnings.append(f"history has {len(history)} interactions; the device models read the newest {limit}")
    catalog = rt.workspace.dataset.catalog
    unknown = [i for i in history if not 1 <= i <= catalog.num_items]
    if unknown:
        warnings.append(f"dropped {len(unknown)} unknown item id(s) from the history, e.g. {unknown[0]}")
        keep = [n for n, i in enumerate(history) if 1 <= i <= catalog.num_items]
        history, stamps = [history[n] for n in keep], [stamps[n] for n in keep]
    return {"history": history, "history_ts": stamps, "warnings": warnings, **FRESH_REQUEST}


@node("device_cache_check")
def device_cache_check(state: DeviceState, rt: TandemRuntime) -> dict:
    """SCaLRec reliability of the cached cloud semantics against the newest interactions."""
    entry = rt.store.cached(state["user"]) if state.get("use_cache", True) else None
    if entry is None:
        return {"cache": {"present": False, "reliable": False}}
    if entry.query_key != query_key(state.get("query", "")):
        return {"cache": {"present": True, "reliable": False, "reason": "new query"}}
    history = state["history"]
    new_items = np.asarray(history[entry.history_len :] if entry.history_len <= len(history) else history, np.int64)
    verdict = rt.policy.judge(np.asarray(entry.e_sem, np.float32), new_items, rt.workspace.semantics.table)
    return {"cache": {"present": True, "reliable": verdict.reliable, "reliability": verdict.reliability,
                      "new_interactions": verdict.new_interactions}}  # fmt: skip


def after_cache_check(state: DeviceState) -> Literal["device_use_cache", "device_abstract"]:
    return "device_use_cache" if state["cache"].get("reliable") else "device_abstract"


@node("device_abstract")
def device_abstract(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec III-B: raw query + history -> scrubbed Abstract (the only thing the cloud will see)."""
    recent_only = state.get("rerequests", 0) > 0
    abstract = rt.make_abstract(state.get("query", ""), state["history"], state["history_ts"], recent_only)
    return {"abstract": abstract.model_dump(), "source": "re-request" if recent_only else "cloud"}


def _from_cache(rt: TandemRuntime, state: DeviceState, e_sem: np.ndarray, source: str) -> dict:
    entry = rt.store.cached(state["user"])
    candidates = np.asarray(entry.candidates, dtype=np.int64)
    semantic = rt.workspace.semantics.table[candidates] @ e_sem
    return {
        "e_sem": e_sem.tolist(),
        "candidates": candidates.tolist(),
        "candidate_scores": semantic.tolist(),
        "plan_result": state.get("plan_result") or {"plan": entry.plan, "status": "cached", "violations": []},
        "source": source,
    }


@node("device_use_cache")
def device_use_cache(state: DeviceState, rt: TandemRuntime) -> dict:
    """SCaLRec: the cached semantics are reliable, so rank from the cache without calling the cloud."""
    entry = rt.store.cached(state["user"])
    return _from_cache(rt, state, np.asarray(entry.e_sem, np.float32), "cache")


@node("device_calibrate")
def device_calibrate(state: DeviceState, rt: TandemRuntime) -> dict:
    """SCaLRec: cloud unreachable, so calibrate the cached embedding on the device from the newest items."""
    entry = rt.store.cached(state["user"])
    new_items = np.asarray(state["history"][entry.history_len :], dtype=np.int64)
    e_cal = rt.calibrator.calibrate(np.asarray(entry.e_sem, np.float32), new_items, rt.workspace.semantics.table)
    update = _from_cache(rt, state, e_cal, "calibrated_cache")
    update["warnings"] = [
        f"cloud unreachable: ranked from the cached cloud semantics, calibrated on the device "
        f"with {len(new_items)} newer interaction(s)"
    ]
    return update


@node("device_fallback")
def device_fallback(state: DeviceState, rt: TandemRuntime) -> dict:
    """No cloud and no cache: a local rule plan, every catalog item a candidate, structured ranking only."""
    from agents.cloud import plan_strategy

    abstract = Abstract.model_validate(state["abstract"])
    result = plan_strategy(abstract, rt.workspace.dataset.catalog.tags(), None)
    plan = result.plan.model_copy(update={"encoder": "SASRec", "beta": 0.0})
    return {
        "plan_result": PlanResult(plan=plan, status="fallback", violations=result.violations).model_dump(),
        "candidates": list(range(1, rt.workspace.dataset.catalog.num_items + 1)),
        "candidate_scores": [0.0] * rt.workspace.dataset.catalog.num_items,
        "source": "device_only",
        "warnings": ["cloud unreachable and no cached semantics: ranked on the device by SASRec alone"],
    }


def _structured(state: DeviceState, rt: TandemRuntime, name: str) -> dict:
    """CDA4Rec Eq. 4 with the device's encoder, at full precision or CHORD's per-user mixed precision."""
    if not state["history"]:
        return {"warnings": [f"no history: {name} skipped, ranking by semantics alone"]}
    encoder, precision = rt.device_encoder(name, state["history"])
    e_str = encoder.encode([np.asarray(state["history"], dtype=np.int64)])[0]
    update: dict[str, Any] = {"e_str": e_str.detach().numpy().tolist(), "precision": precision}
    if "crossing" in precision:
        update["crossings"] = [precision.pop("crossing")]
    if "warning" in precision:
        update["warnings"] = [precision.pop("warning")]
    return update


@node("device_sasrec")
def device_sasrec(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec Eq. 4 with f_loc = SASRec."""
    return _structured(state, rt, "SASRec")


@node("device_surge")
def device_surge(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec Eq. 4 with f_loc = SURGE."""
    return _structured(state, rt, "SURGE")


@node("device_rank")
def device_rank(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec Eq. 5-7 (fusion at score level, LSC4Rec Eq. 9-10) and LSC4Rec Eq. 11 inconsistency."""
    plan = Plan.model_validate(state["plan_result"]["plan"])
    candidates = np.asarray(state["candidates"], dtype=np.int64)
    history = set(state["history"])
    keep = np.array([c not in history for c in candidates.tolist()], dtype=bool)  # never re-recommend a seen item
    candidates = candidates[keep]
    semantic = np.asarray(state["candidate_scores"], dtype=np.float64)[keep]
    structured = None
    if state.get("e_str") is not None and plan.encoder != "none":
        encoder = rt.encoder(plan.encoder)
        import torch

        with torch.no_grad():
            e_str = torch.tensor([state["e_str"]], dtype=torch.float32)
            structured = encoder.candidate_scores(e_str, torch.from_numpy(candidates))[0].numpy()
    beta = plan.beta if structured is not None else 1.0
    if state.get("source") == "device_only":
        beta = 0.0 if structured is not None else 1.0
    ordered, fused, score = rank_candidates(candidates, semantic, structured, beta)
    picked = _distinct_titles(ordered, rt.workspace.dataset.catalog, state.get("top_k", 10))
    update: dict[str, Any] = {"ranked": ordered[picked].tolist(), "ranked_scores": fused[picked].tolist()}
    update["inconsistency"] = score
    if state.get("source") in ("cloud", "re-request") and state.get("e_sem") is not None:
        rt.store.store(
            state["user"],
            CachedSemantics(
                e_sem=state["e_sem"], candidates=state["candidates"], candidate_scores=state["candidate_scores"],
                history_len=len(state["history"]), plan=state["plan_result"]["plan"],
                query_key=query_key(state.get("query", "")),
            ),
        )  # fmt: skip
    return update


def _distinct_titles(ordered: np.ndarray, catalog, k: int) -> list[int]:
    """Positions of the first k items with distinct (title, year): MovieLens lists a few films twice."""
    seen, picked = set(), []
    for position, item_id in enumerate(ordered.tolist()):
        item = catalog[item_id]
        if (item.title, item.year) not in seen:
            seen.add((item.title, item.year))
            picked.append(position)
            if len(picked) == k:
                break
    return picked


def after_rank(state: DeviceState, config: RunnableConfig) -> Literal["device_rerequest", "device_explain", "__end__"]:
    """LSC4Rec Eq. 12: ask the cloud again once when the two rankings disagree beyond the threshold."""
    rt = runtime_of(config)
    if state.get("source") == "cloud" and state.get("rerequests", 0) == 0 and state.get("allow_rerequest", True):
        if state["inconsistency"] >= rt.request_threshold:
            return "device_rerequest"
    return "device_explain" if state.get("explain") else END


@node("device_rerequest")
def device_rerequest(state: DeviceState, rt: TandemRuntime) -> dict:
    """LSC4Rec Eq. 12 fired: the next abstract is built from the newest interactions only."""
    return {"rerequests": state.get("rerequests", 0) + 1}


@node("device_explain")
def device_explain(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec III-H / Fig. 5: a short explanation of the final list."""
    return {"explanation": rt.explain(state["plan_result"]["plan"], state["ranked"])}


# ---------------------------------------------------------------------------------------------- cloud


@node("cloud_plan")
def cloud_plan(state: CloudInput, rt: TandemRuntime) -> dict:
    """CDA4Rec III-C, across the boundary: Abstract -> PlanResult."""
    request = PlanRequest(abstract=Abstract.model_validate(state["abstract"]))
    try:
        result, crossing = rt.boundary.call("plan", request, PlanResult)
    except CloudUnavailableError as exc:
        return {"cloud_failed": True, "warnings": [f"cloud planning failed: {exc}"]}
    return {"plan_result": result.model_dump(), "crossings": [crossing.model_dump()], "cloud_failed": False}


@node("cloud_semantic")
def cloud_semantic(state: CloudInput, rt: TandemRuntime) -> dict:
    """CDA4Rec Eq. 2-3, across the boundary: (Abstract, Plan) -> e_sem and tag-group candidates."""
    request = SemanticRequest(
        abstract=Abstract.model_validate(state["abstract"]), plan=Plan.model_validate(state["plan_result"]["plan"])
    )
    try:
        reply, crossing = rt.boundary.call("semantic", request, SemanticResponse)
    except CloudUnavailableError as exc:
        return {"cloud_failed": True, "warnings": [f"cloud retrieval failed: {exc}"]}
    if not reply.candidates:
        return {"cloud_failed": True, "warnings": ["the plan's tags returned no candidates"],
                "crossings": [crossing.model_dump()]}  # fmt: skip
    return {
        "e_sem": reply.e_sem,
        "candidates": reply.candidates,
        "candidate_scores": reply.scores,
        "crossings": [crossing.model_dump()],
    }


# ---------------------------------------------------------------------------------------------- routing


def _structured_node(state: DeviceState) -> list[str]:
    encoder = Plan.model_validate(state["plan_result"]["plan"]).encoder
    if encoder == "none" or state.get("e_str") is not None:
        return []
    return ["device_sasrec" if encoder == "SASRec" else "device_surge"]


def after_plan(state: DeviceState) -> list[str]:
    """Cloud down -> calibrated cache or device-only; else fan out semantic modelling and structured modelling."""
    if state.get("cloud_failed"):
        cached = state.get("cache", {}).get("present")
        return ["device_calibrate" if cached else "device_fallback"]
    return ["cloud_semantic", *_structured_node(state)]


def after_semantic(state: DeviceState) -> list[str]:
    if state.get("cloud_failed"):
        return ["device_calibrate" if state.get("cache", {}).get("present") else "device_fallback"]
    return ["device_rank"]


def to_structured_or_rank(state: DeviceState) -> list[str]:
    return _structured_node(state) or ["device_rank"]


builder = StateGraph(DeviceState)
builder.add_node("device_history", device_history)
builder.add_node("device_cache_check", device_cache_check)
builder.add_node("device_use_cache", device_use_cache)
builder.add_node("device_abstract", device_abstract)
builder.add_node("cloud_plan", cloud_plan, input_schema=CloudInput)
builder.add_node("cloud_semantic", cloud_semantic, input_schema=CloudInput)
builder.add_node("device_sasrec", device_sasrec)
builder.add_node("device_surge", device_surge)
builder.add_node("device_calibrate", device_calibrate)
builder.add_node("device_fallback", device_fallback)
builder.add_node("device_rank", device_rank, defer=True)
builder.add_node("device_rerequest", device_rerequest)
builder.add_node("device_explain", device_explain)

builder.add_edge(START, "device_history")
builder.add_edge("device_history", "device_cache_check")
builder.add_conditional_edges("device_cache_check", after_cache_check)
builder.add_edge("device_abstract", "cloud_plan")
builder.add_conditional_edges(
    "cloud_plan", after_plan, ["cloud_semantic", "device_sasrec", "device_surge", "device_calibrate", "device_fallback"]
)
builder.add_conditional_edges("cloud_semantic", after_semantic, ["device_rank", "device_calibrate", "device_fallback"])
for source in ("device_use_cache", "device_calibrate", "device_fallback"):
    builder.add_conditional_edges(source, to_structured_or_rank, ["device_sasrec", "device_surge", "device_rank"])
builder.add_edge("device_sasrec", "device_rank")
builder.add_edge("device_surge", "device_rank")
builder.add_conditional_edges("device_rank", after_rank, ["device_rerequest", "device_explain", END])
builder.add_edge("device_rerequest", "device_abstract")
builder.add_edge("device_explain", END)

graph = builder.compile(name="tandem")

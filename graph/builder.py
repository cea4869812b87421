"""The Tandem graph: device and cloud agents in one LangGraph StateGraph (CDA4Rec, LSC4Rec, SCaLRec, CHORD).

Reads top to bottom: node functions, routers, then `builder` and `graph`. One request:

    device_history -> device_cache_check --reliable--> device_use_cache ----------------------+
                              |stale/miss                                                      |
                              v                                                                v
    device_abstract -> cloud_plan --ok--> cloud_semantic  +  device_sasrec | device_surge -> device_rank
          ^                 |  `--plan names a ruled-out tag--> device_constrain --^               |
          ^                 |cloud down -> device_calibrate (cache) | device_fallback (no cache)   |
          |                                                                                        v
          +------------------------------ device_rerequest <--inconsistent-- (LSC4Rec Eq. 11-12)
                                                                   device_explain (if asked) -> END

Nodes only wire: each is a few lines calling the `DeviceAgent` or, across the `Boundary`, the `CloudAgent`.
Cloud nodes take the narrow `CloudInput` schema (abstract and plan only). The runtime reaches the nodes
through the run context (`context_schema=TandemContext`); without one, it is built from the settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from agents.device.replies import expand_compact
from graph.boundary import CloudRefusedError, CloudUnavailableError
from graph.context import TandemContext
from graph.runtime import TandemRuntime
from graph.state import CloudInput, DeviceState, RequestInput, RequestOutput, checked_request
from tools.constraints import unsupported_note
from tools.fusion import should_request
from tools.protocol import (
    ChordStrategy,
    CompactSemanticResponse,
    Crossing,
    PlanRequest,
    PlanResult,
    SemanticRequest,
    SemanticResponse,
)

NodeFn = Callable[[Any, TandemRuntime], dict[str, Any]]
PER_TURN = ("route", "warnings", "crossings", "timings")

FRESH_REQUEST: dict[str, Any] = {
    "rerequests": 0, "cloud_failed": False, "e_str": None, "structured_encoder": None, "e_sem": None, "e_sem_space": "",
    "plan_result": None, "abstract": None, "candidates": [], "candidate_scores": [], "ranked": [],
    "ranked_scores": [], "explanation": None, "inconsistency": None, "source": None, "cache": None,
    "precision": None, "replaced": [],
}  # fmt: skip
"""Per-request fields cleared by the first node (a chat thread keeps its state between turns)."""


def node(name: str, *, first: bool = False) -> Callable[[NodeFn], Callable[..., dict[str, Any]]]:
    """Wrap a node: hand it the runtime, record its name in `route` and its wall time in `timings`.

    The first node of a request replaces the per-turn lists instead of appending to them.
    """

    def wrap(fn: NodeFn) -> Callable[..., dict[str, Any]]:
        # no functools.wraps: LangGraph reads the signature to decide what to inject (`runtime`)
        def run(state: dict, runtime: Runtime[TandemContext]) -> dict[str, Any]:
            start = time.perf_counter()
            update = fn(state, TandemContext.of(runtime.context).resolve())
            update["route"] = [name, *update.get("route", [])]
            update["timings"] = [{"node": name, "seconds": time.perf_counter() - start}]
            if first:
                update.update({key: Overwrite(list(update.get(key, []))) for key in PER_TURN})
            return update

        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return run

    return wrap


# ---------------------------------------------------------------------------------------------- device


@node("device_history", first=True)
def device_history(state: DeviceState, rt: TandemRuntime) -> dict:
    """Check the request; load the user's local history (seeded once from the data set) unless it brought one."""
    request = checked_request(state)
    history = rt.device.history(request.user, request.history, request.history_ts)
    constraints = rt.device.constraints(request.query)
    note = unsupported_note(constraints)
    return {"history_items": history.items, "history_stamps": history.timestamps, **FRESH_REQUEST,
            "warnings": history.warnings + ([note] if note else []), "constraints": constraints}  # fmt: skip


def _cache_key(state: DeviceState) -> str:
    """The SCaLRec cache key: the query, the caller's scope (planner, prompt) and the conversation's items."""
    return (f"{state.get('query', '')}\n{state.get('cache_scope') or ''}\nseeds {state.get('seeds') or []}"
            f"\navoid {state.get('avoid') or []}")  # fmt: skip


@node("device_cache_check")
def device_cache_check(state: DeviceState, rt: TandemRuntime) -> dict:
    """SCaLRec reliability of the cached cloud semantics against the newest interactions."""
    if not state.get("use_cache", True):
        return {}
    verdict = rt.device.cache_verdict(state["user"], _cache_key(state), state["history_items"])
    return {"cache": verdict, "warnings": [verdict.warning] if verdict.warning else []}


def after_cache_check(state: DeviceState) -> Literal["device_use_cache", "device_abstract"]:
    cache = state.get("cache")
    return "device_use_cache" if cache is not None and cache.reliable else "device_abstract"


@node("device_abstract")
def device_abstract(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec III-B: raw query + history -> scrubbed Abstract (the only thing the cloud will see)."""
    recent_only = state.get("rerequests", 0) > 0
    constraints = state.get("constraints")
    query = constraints.served if constraints is not None else state.get("query", "")
    result = rt.device.abstract(query, state["history_items"], state["history_stamps"], recent_only=recent_only)
    return {"abstract": result.abstract, "source": "re-request" if recent_only else "cloud",
            "replaced": result.replaced}  # fmt: skip


def _from_cache(rt: TandemRuntime, state: DeviceState, e_sem: np.ndarray, source: str) -> dict:
    entry = rt.device.cached(state["user"])
    candidates, scores = rt.device.cached_candidates(entry, e_sem)
    plan = state.get("plan_result") or PlanResult.model_validate({"plan": entry.plan, "status": "cached"})
    return {"e_sem": e_sem.tolist(), "e_sem_space": entry.space, "candidates": candidates.tolist(),
            "candidate_scores": scores.tolist(), "plan_result": plan, "source": source}  # fmt: skip


@node("device_use_cache")
def device_use_cache(state: DeviceState, rt: TandemRuntime) -> dict:
    """SCaLRec: the cached semantics are reliable, so rank from the cache without calling the cloud."""
    entry = rt.device.cached(state["user"])
    return _from_cache(rt, state, np.asarray(entry.e_sem, np.float32), "cache")


@node("device_calibrate")
def device_calibrate(state: DeviceState, rt: TandemRuntime) -> dict:
    """SCaLRec: cloud unreachable, so calibrate the cached embedding on the device from the newest items."""
    e_cal, newer = rt.device.calibrate(rt.device.cached(state["user"]), state["history_items"])
    how = "calibrated on the device" if rt.device.calibrator else "NOT calibrated (no calibrator trained)"
    update = _from_cache(rt, state, e_cal, "calibrated_cache")
    update["warnings"] = [f"cloud unreachable: ranked from the cached cloud semantics, {how}, with {newer} newer "
                          "interaction(s)"]  # fmt: skip
    return update


@node("device_fallback")
def device_fallback(state: DeviceState, rt: TandemRuntime) -> dict:
    """No cloud and no cache: a local rule plan, every catalog item a candidate, structured ranking only."""
    items = rt.device.catalog.num_items
    return {
        "plan_result": rt.device.local_plan(state["abstract"]), "candidates": list(range(1, items + 1)),
        "candidate_scores": [0.0] * items, "source": "device_only",
        "warnings": ["cloud unreachable and no cached semantics: ranked on the device by SASRec alone"],
    }  # fmt: skip


def _structured(state: DeviceState, rt: TandemRuntime, name: str) -> dict:
    """CDA4Rec Eq. 4 with the plan's encoder, at full precision or CHORD's per-user mixed precision."""
    if not state["history_items"]:
        return {"warnings": [f"no history: {name} skipped, ranking by semantics alone"]}
    name, warnings = rt.device.resolve_encoder(name)
    request, notes = rt.device.chord_request(name, state["history_items"])
    strategy, crossings = None, []
    if request is not None:
        try:
            strategy, crossing = rt.boundary.call(
                "strategy", request, ChordStrategy, check=lambda reply: rt.device.check_strategy(name, request, reply)
            )
            crossings.append(crossing)
        except CloudUnavailableError as exc:
            notes.append(f"no precision strategy ({exc}): full precision")
    encoding = rt.device.encode(name, state["history_items"], strategy)
    return {"e_str": encoding.e_str.tolist(), "structured_encoder": encoding.encoder,
            "precision": encoding.precision, "crossings": crossings, "warnings": warnings + notes}  # fmt: skip


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
    """The device's one rank step (CDA4Rec Eq. 5-7, LSC4Rec Eq. 9-11); fresh cloud semantics are cached."""
    device, plan = rt.device, state["plan_result"].plan
    e_str = state.get("e_str") if plan.uses_encoder else None
    structured = device.structured_scores(state["structured_encoder"], e_str) if e_str is not None else None
    allowed = device.allowed(state.get("constraints"), state.get("avoid") or [])
    ranking = device.rank(np.asarray(state["candidates"], np.int64), np.asarray(state["candidate_scores"]),
                          plan.beta, state["history_items"], structured, allowed=allowed,
                          seeds=state.get("seeds") or [])  # fmt: skip
    ranked, scores = device.shortlist(ranking, state.get("top_k", 10))
    warnings: list[str] = []
    if state.get("source") in ("cloud", "re-request") and state.get("e_sem") is not None:
        warnings = device.remember(state["user"], _cache_key(state), len(state["history_items"]), state["e_sem"],
                                   state["candidates"], state["candidate_scores"], plan,
                                   state.get("e_sem_space", ""))  # fmt: skip
    if allowed is not None and len(ranked) < state.get("top_k", 10):
        warnings.append(f"only {len(ranked)} candidate(s) meet the request's constraints "
                        f"({state['constraints'].summary() if state.get('constraints') else 'items turned down'})")
    return {"ranked": ranked, "ranked_scores": scores, "inconsistency": ranking.inconsistency, "warnings": warnings}


def after_rank(state: DeviceState, runtime: Runtime[TandemContext]) -> Literal["device_rerequest", "device_explain", "__end__"]:  # noqa: E501
    """LSC4Rec Eq. 12: ask the cloud again once when the two rankings disagree beyond the threshold."""
    threshold = TandemContext.of(runtime.context).resolve().request_threshold
    fresh = state.get("source") == "cloud" and state.get("rerequests", 0) == 0 and state.get("allow_rerequest", True)
    if fresh and threshold is not None and should_request(state["inconsistency"], threshold):
        return "device_rerequest"
    return "device_explain" if state.get("explain") else END


@node("device_rerequest")
def device_rerequest(state: DeviceState, rt: TandemRuntime) -> dict:
    """LSC4Rec Eq. 12 fired: the next abstract is built from the newest interactions only."""
    return {"rerequests": state.get("rerequests", 0) + 1}


@node("device_explain")
def device_explain(state: DeviceState, rt: TandemRuntime) -> dict:
    """CDA4Rec III-H / Fig. 5: a short explanation of the final list."""
    return {"explanation": rt.device.explain(state["plan_result"].plan, state["ranked"]).text}


@node("device_constrain")
def device_constrain(state: DeviceState, rt: TandemRuntime) -> dict:
    """The plan names a tag the request rules out: swap it for an allowed one before retrieval (device side)."""
    result = state["plan_result"]
    plan, notes = rt.device.constrain_plan(result.plan, state["constraints"], state["history_items"])
    return {"plan_result": result.model_copy(update={"plan": plan}), "warnings": notes}


# ---------------------------------------------------------------------------------------------- cloud


@node("cloud_plan")
def cloud_plan(state: CloudInput, rt: TandemRuntime) -> dict:
    """CDA4Rec III-C, across the boundary: Abstract -> PlanResult."""
    try:
        result, crossing = rt.boundary.call("plan", PlanRequest(abstract=state["abstract"]), PlanResult,
                                            check=rt.device.check_plan)  # fmt: skip
    except CloudUnavailableError as exc:
        return {"cloud_failed": True, "warnings": [f"cloud planning failed: {exc}"]}
    warnings = []
    failure = next((v.message for v in result.violations if v.field == "model"), None)
    if result.status == "fallback" and failure is not None:
        warnings.append(f"the cloud's planner model failed ({failure[:200]}): the rule planner planned")
    return {"plan_result": result, "crossings": [crossing], "cloud_failed": False, "warnings": warnings}


@node("cloud_semantic")
def cloud_semantic(state: CloudInput, rt: TandemRuntime) -> dict:
    """CDA4Rec Eq. 2-3, across the boundary: (Abstract, Plan) -> e_sem and tag-group candidates.

    The answer comes in the wire format the device asks for (`TandemRuntime.answer_wire`); a cloud older than the
    compact wire refuses the `wire` field with a 422, and the device then asks again on wire 1, once, with a
    warning, and stays on wire 1."""
    warnings: list[str] = []
    try:
        try:
            reply, crossing = _ask_semantic(state, rt, rt.answer_wire)
        except CloudRefusedError as exc:
            if rt.answer_wire == 1 or not exc.refuses_field("wire"):
                raise
            rt.wire_downgraded = True
            warnings.append("the cloud is older than the compact wire (it refused the `wire` field): asked again on "
                            "wire 1, which this session keeps (set TANDEM_CLOUD_WIRE=1 to skip the first try)")
            reply, crossing = _ask_semantic(state, rt, 1)
    except CloudUnavailableError as exc:
        return {"cloud_failed": True, "warnings": [*warnings, f"cloud retrieval failed: {exc}"]}
    if not reply.candidates:
        return {"cloud_failed": True, "warnings": [*warnings, "the plan's tags returned no candidates"],
                "crossings": [crossing]}  # fmt: skip
    return {"e_sem": reply.e_sem, "e_sem_space": rt.device.answer_space(state["abstract"]),
            "candidates": reply.candidates, "candidate_scores": reply.scores, "crossings": [crossing],
            "warnings": warnings}  # fmt: skip


def _ask_semantic(state: CloudInput, rt: TandemRuntime, wire: int) -> tuple[SemanticResponse, Crossing]:
    """One /semantic exchange asking for answer format `wire` (1 is sent as no field at all, as an old device)."""
    request = SemanticRequest(abstract=state["abstract"], plan=state["plan_result"].plan,
                              wire=wire if wire > 1 else None, space=rt.device.item_space)  # fmt: skip

    space = rt.device.answer_space(state["abstract"])  # the table the cloud answers in, by the rule both apply

    def check(answer: SemanticResponse | CompactSemanticResponse) -> SemanticResponse:
        if isinstance(answer, CompactSemanticResponse):  # wire 2: scores recomputed from the device's item table
            answer = expand_compact(answer, rt.device.table_for(space))
        return rt.device.check_semantic(request, answer, space)

    answer_type = CompactSemanticResponse if wire == 2 else SemanticResponse
    return rt.boundary.call("semantic", request, answer_type, check=check)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- routing


def _structured_node(state: DeviceState) -> list[str]:
    encoder = state["plan_result"].plan.encoder
    if encoder == "none" or state.get("e_str") is not None:
        return []
    return ["device_sasrec" if encoder == "SASRec" else "device_surge"]


def _cloud_down(state: DeviceState) -> list[str]:
    cache = state.get("cache")
    return ["device_calibrate" if cache is not None and cache.present else "device_fallback"]


def _needs_constraint(state: DeviceState) -> bool:
    constraints = state.get("constraints")
    return constraints is not None and any(constraints.rules_out(tag) for tag in state["plan_result"].plan.tags)


def after_plan(state: DeviceState) -> list[str]:
    """Cloud down -> calibrated cache or device-only; a plan naming a ruled-out tag -> device_constrain; else
    fan out semantic modelling and structured modelling."""
    if state.get("cloud_failed"):
        return _cloud_down(state)
    if _needs_constraint(state):
        return ["device_constrain"]
    return ["cloud_semantic", *_structured_node(state)]


def after_constrain(state: DeviceState) -> list[str]:
    return ["cloud_semantic", *_structured_node(state)]


def after_semantic(state: DeviceState) -> list[str]:
    return _cloud_down(state) if state.get("cloud_failed") else ["device_rank"]


def to_structured_or_rank(state: DeviceState) -> list[str]:
    return _structured_node(state) or ["device_rank"]


builder = StateGraph(DeviceState, context_schema=TandemContext, input_schema=RequestInput, output_schema=RequestOutput)
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
builder.add_node("device_constrain", device_constrain)
builder.add_conditional_edges(
    "cloud_plan", after_plan,
    ["cloud_semantic", "device_sasrec", "device_surge", "device_calibrate", "device_fallback", "device_constrain"],
)  # fmt: skip
builder.add_conditional_edges("device_constrain", after_constrain, ["cloud_semantic", "device_sasrec", "device_surge"])
builder.add_conditional_edges("cloud_semantic", after_semantic, ["device_rank", "device_calibrate", "device_fallback"])
for source in ("device_use_cache", "device_calibrate", "device_fallback"):
    builder.add_conditional_edges(source, to_structured_or_rank, ["device_sasrec", "device_surge", "device_rank"])
builder.add_edge("device_sasrec", "device_rank")
builder.add_edge("device_surge", "device_rank")
builder.add_conditional_edges("device_rank", after_rank, ["device_rerequest", "device_explain", END])
builder.add_edge("device_rerequest", "device_abstract")
builder.add_edge("device_explain", END)

graph = builder.compile(name="tandem")

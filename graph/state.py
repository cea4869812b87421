"""State schemas of the Tandem graph.

`DeviceState` is the whole request as the device sees it, raw query and history included. `CloudInput`
is the narrow schema every cloud node is given: abstract and plan only, so raw data cannot reach a cloud
node by construction (LangGraph passes a node only the keys of its input schema). List fields that
several nodes append to have an explicit `operator.add` reducer.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

Source = Literal["cloud", "re-request", "cache", "calibrated_cache", "device_only"]


class CloudInput(TypedDict, total=False):
    """What may cross to the cloud."""

    abstract: dict
    """The scrubbed Abstract (sanitized query + behaviour summary) as JSON."""
    plan_result: dict
    """The cloud's PlanResult (plan, status, violations) as JSON."""


class DeviceState(TypedDict, total=False):
    """One recommendation request on the device."""

    user: str
    """The device user's id (as in the data set, e.g. "196")."""
    query: str
    """The raw query as typed. Never leaves the device."""
    given_history: dict | None
    """Optional {"items": [...], "timestamps": [...]} replacing the device store (evals). Device only."""
    history: list[int]
    """The user's item ids, oldest first, as read by `device_history`. Never leaves the device."""
    history_ts: list[int]
    """Timestamps aligned with `history`."""
    explain: bool
    """Whether to generate an explanation (CDA4Rec III-H)."""
    top_k: int
    """How many items to recommend."""
    use_cache: bool
    """Whether the SCaLRec cache may answer (default True)."""
    allow_rerequest: bool
    """Whether LSC4Rec's re-request may fire (default True)."""
    abstract: dict | None
    """The scrubbed abstract sent to the cloud (CDA4Rec III-B)."""
    plan_result: dict | None
    """Plan as JSON plus how it was obtained (parsed / repaired / fallback)."""
    e_sem: list[float] | None
    """Semantic user embedding (CDA4Rec Eq. 2), fresh from the cloud or from the device cache."""
    candidates: list[int]
    """Cloud candidate ids, best first (CDA4Rec Eq. 3)."""
    candidate_scores: list[float]
    """The cloud's e_sem . e_i for each candidate."""
    e_str: list[float] | None
    """Structured user embedding (CDA4Rec Eq. 4), when the plan asks for an encoder."""
    precision: dict | None
    """Device encoder precision this request: {"mode": "full"|"chord", "avg_bits": ..., "strategy_bits": ...}."""
    ranked: list[int]
    """Final top-k item ids (CDA4Rec Eq. 7)."""
    ranked_scores: list[float]
    """Fused scores of `ranked` (CDA4Rec Eq. 5-6 at score level)."""
    source: Source | None
    """Where the semantics came from for this answer."""
    cache: dict
    """SCaLRec cache verdict: reliable, reliability, new interactions."""
    inconsistency: float | None
    """LSC4Rec Eq. 11 between the cloud ranking and the device ranking."""
    cloud_failed: bool
    """Set when a cloud call failed during this request."""
    rerequests: int
    """How many times the device asked the cloud again in this request (LSC4Rec Eq. 12)."""
    explanation: str | None
    """Natural-language explanation of the list (CDA4Rec Fig. 5)."""
    route: Annotated[list[str], operator.add]
    """Every node and decision this request went through, in order."""
    warnings: Annotated[list[str], operator.add]
    """Fallbacks taken and why (shown to the user)."""
    crossings: Annotated[list[dict[str, Any]], operator.add]
    """Every device<->cloud message: route, bytes up/down, seconds."""
    timings: Annotated[list[dict[str, Any]], operator.add]
    """Per-node wall time: {"node": ..., "seconds": ...}."""

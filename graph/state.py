"""State schemas of the Tandem graph.

- `RequestInput`: what a caller gives (LangGraph `input_schema`): the user, the query and a few switches.
- `DeviceState`: the whole request as the device sees it, raw query and history included.
- `CloudInput`: the narrow schema every cloud node is given: the abstract and the plan, so raw data cannot
  reach a cloud node by construction (LangGraph passes a node only the keys of its input schema).
- `RequestOutput`: what a caller gets back (LangGraph `output_schema`).
Messages are typed models (`tools.protocol`), validated where they cross. The per-turn lists (route,
warnings, crossings, timings) append within a request and are reset by its first node, so a chat thread
does not accumulate them for its whole life.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.device.agent import CacheVerdict, Precision
from ground.errors import UsageError
from tools.constraints import RequestConstraints
from tools.protocol import Abstract, Crossing, PlanResult

Source = Literal["cloud", "re-request", "cache", "calibrated_cache", "device_only"]


class Timing(TypedDict):
    node: str
    seconds: float


class RequestInput(TypedDict, total=False):
    """One recommendation request."""

    user: str
    """The device user's id (as in the data set, e.g. "196")."""
    query: str
    """The raw query as typed (may be empty). Never leaves the device."""
    explain: bool
    """Whether to generate an explanation (CDA4Rec III-H)."""
    top_k: int
    """How many items to recommend (default 10)."""
    use_cache: bool
    """Whether the SCaLRec cache may answer (default True)."""
    allow_rerequest: bool
    """Whether LSC4Rec's re-request may fire (default True)."""
    history: list[int] | None
    """Optional item ids replacing the device store's history for this request (evals). Device only."""
    history_ts: list[int] | None
    """Timestamps aligned with `history`."""
    seeds: list[int] | None
    """Item ids a conversation ranks toward (liked or referenced items; `tools.fusion.rank_step`). Device only."""
    avoid: list[int] | None
    """Item ids a conversation turned down ("not that one"): never recommended. Device only."""
    cache_scope: str | None
    """What else the SCaLRec cache entry must match besides the query (planner, prompt); set by the caller."""


MAX_QUERY_CHARS = 10_000
MAX_TOP_K = 100


class Request(BaseModel):
    """A request's input, checked once: by the graph's first node, whichever entry point it came from."""

    model_config = ConfigDict(extra="ignore")

    user: str = Field(min_length=1, max_length=200)
    query: str = Field("", max_length=MAX_QUERY_CHARS)
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    history: list[int] | None = None
    history_ts: list[int] | None = None
    seeds: list[int] = Field(default_factory=list, max_length=MAX_TOP_K)
    avoid: list[int] = Field(default_factory=list, max_length=10 * MAX_TOP_K)


def checked_request(values: Mapping[str, Any]) -> Request:
    """The request in `values`, or a one-line `UsageError` (a `TandemError`) naming what is wrong with it."""
    try:
        return Request.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "request"
        raise UsageError(f"bad request: {field}: {first['msg']}") from None


class CloudInput(TypedDict, total=False):
    """What may cross to the cloud."""

    abstract: Abstract | None
    """The scrubbed abstract (sanitized query + behaviour summary)."""
    plan_result: PlanResult | None
    """The cloud's plan and how it was obtained."""


class RequestOutput(TypedDict, total=False):
    """What a request returns."""

    user: str
    query: str
    source: Source | None
    """Where the semantics came from for this answer."""
    abstract: Abstract | None
    plan_result: PlanResult | None
    candidates: list[int]
    """Cloud candidate ids, best first (CDA4Rec Eq. 3)."""
    candidate_scores: list[float]
    """The cloud's e_sem . e_i for each candidate."""
    ranked: list[int]
    """Final top-k item ids (CDA4Rec Eq. 7)."""
    ranked_scores: list[float]
    """Fused scores of `ranked` (CDA4Rec Eq. 5-6 at score level)."""
    inconsistency: float | None
    """LSC4Rec Eq. 11 between the cloud ranking and the device ranking."""
    rerequests: int
    """How many times the device asked the cloud again in this request (LSC4Rec Eq. 12)."""
    cache: CacheVerdict | None
    """SCaLRec cache verdict."""
    precision: Precision | None
    """Device encoder precision this request (CHORD)."""
    explanation: str | None
    """Natural-language explanation of the list (CDA4Rec Fig. 5)."""
    constraints: RequestConstraints | None
    """The request in the catalogue's terms (excluded tags, years, unused parts), enforced on the device."""
    replaced: list[str]
    """What the privacy rewrite changed before the abstract crossed ("Toy Story -> an animated ...")."""
    route: Annotated[list[str], operator.add]
    """Every node this request went through, in order."""
    warnings: Annotated[list[str], operator.add]
    """Fallbacks taken and why (shown to the user)."""
    crossings: Annotated[list[Crossing], operator.add]
    """Every device<->cloud message: route, bytes up/down, seconds."""
    timings: Annotated[list[Timing], operator.add]
    """Per-node wall time."""


class DeviceState(RequestInput, RequestOutput, total=False):
    """One recommendation request on the device (input, intermediate results, output)."""

    history_items: list[int]
    """The user's item ids, oldest first, as the device models read them. Never leaves the device."""
    history_stamps: list[int]
    """Timestamps aligned with `history_items`."""
    e_sem: list[float] | None
    """Semantic user embedding (CDA4Rec Eq. 2), fresh from the cloud or from the device cache."""
    e_sem_space: str
    """The item table e_sem is scored against: "" = Eq. 1's, else the encoder space's key (`tools.encoder_space`)."""
    e_str: list[float] | None
    """Structured user embedding (CDA4Rec Eq. 4), when the plan asks for an encoder."""
    structured_encoder: str | None
    """Which encoder produced `e_str` (SASRec stands in for an untrained SURGE)."""
    cloud_failed: bool
    """Set when a cloud call failed during this request."""
    conversation: dict[str, Any] | None
    """A chat's conversation state (`tools.conversation.Conversation` as JSON), kept with the chat thread."""

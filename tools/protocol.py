"""The wire protocol: every message that crosses between the device and the cloud, in one module.

What crosses, and nothing else (CDA4Rec Fig. 2, CHORD Fig. 2):
- up:   `PlanRequest` (the scrubbed `Abstract`), `SemanticRequest` (abstract + the plan the cloud chose),
        `StrategyRequest` (CHORD's user profile z, never the history);
- down: `PlanResult` (the `Plan` and how it was obtained), `SemanticResponse` (e_sem and the candidates; or,
        when the device asks for wire 2, the `CompactSemanticResponse`), `ChordStrategy` (2 bits per channel).
Every model forbids unknown fields, so a message smuggling anything else (a history, titles) is refused
where it crosses. Allowed values are declared once, as `Literal`s, and the sets the code checks against are
derived from them. A plan is validated once, when it is built or when it crosses; after that it travels as
a typed, frozen `Plan`.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from ground.errors import TandemError

TagCount = Literal[3, 5, 10, 20]
CandidateSize = Literal[500, 1000, 2000, 5000]
EncoderName = Literal["SASRec", "SURGE", "none"]
Module = Literal["semantic", "retrieval", "structured", "ranking"]
Status = Literal["parsed", "repaired", "fallback", "rule", "cached", "device", "learned"]
"""How a plan was obtained: parsed / repaired from the language model's text; fallback = the rule planner
after the language model failed; rule = the rule planner was chosen; cached = the plan behind the SCaLRec
cache; device = the device's local plan when the cloud was unreachable; learned = a planner learned from hindsight
labels, without a language model (`agents.cloud.neighbours`)."""

TAG_COUNTS: tuple[int, ...] = get_args(TagCount)
CANDIDATE_SIZES: tuple[int, ...] = get_args(CandidateSize)
ENCODERS: tuple[str, ...] = get_args(EncoderName)
MODULES: tuple[str, ...] = get_args(Module)
STATUSES: tuple[str, ...] = get_args(Status)

MAX_SANITIZED_QUERY = 1_000
MAX_SUMMARY = 4_000
MAX_TAGS = max(TAG_COUNTS)
MAX_TAG_NAME = 64
MAX_EMBEDDING_DIM = 4_096
MAX_CANDIDATES = 1_000_000


class WireModel(BaseModel):
    """Base of every message: frozen, and unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------------------------------------- up: abstract


Density = Literal["sparse", "moderate", "dense"]
SPARSE_BELOW = 20  # fewer interactions: a sparse history (CDA4Rec Fig. 4 tips)
DENSE_FROM = 50  # at least this many: a dense history


class BehaviorFacts(WireModel):
    """Computed facts about a history that the behavioural summary always carries (CDA4Rec III-B).

    They let the planner see sparsity and recency even when the small model writes poorly. They cross as
    one fixed sentence inside the summary (`to_text`), which the cloud parses back (`from_text`).
    """

    interactions: int = Field(ge=0, description="Number of interactions with known items.")
    span_days: int = Field(ge=0, description="Days between the first and the newest interaction.")
    recent_30d: int = Field(ge=0, description="Interactions in the 30 days up to the newest one.")
    days_since_last: int = Field(ge=0, description="Days from the newest interaction to the request time.")
    top_tags: list[str] = Field(default_factory=list, description="Most frequent tags, most frequent first.")
    recent_tags: list[str] = Field(default_factory=list, description="Most frequent tags of the newest 10 items.")

    @property
    def density(self) -> Density:
        """sparse / moderate / dense, by the interaction count (one definition for both agents)."""
        if self.interactions < SPARSE_BELOW:
            return "sparse"
        return "dense" if self.interactions >= DENSE_FROM else "moderate"

    def to_text(self) -> str:
        """One fixed sentence, parsed back by `from_text` on the cloud side."""
        top = ", ".join(self.top_tags) or "none"
        recent = ", ".join(self.recent_tags) or "none"
        return (
            f"Facts: {self.interactions} interactions over {self.span_days} days; "
            f"{self.recent_30d} in the last 30 days; last one {self.days_since_last} days before the request; "
            f"top tags: {top}; recent tags: {recent}."
        )

    @classmethod
    def from_text(cls, text: str) -> BehaviorFacts | None:
        """The facts inside a behavioural summary, or None when the sentence is missing."""
        match = _FACTS_RE.search(text)
        if not match:
            return None

        def tags(group: str) -> list[str]:
            return [] if group.strip() == "none" else [t.strip() for t in group.split(",") if t.strip()]

        return cls(
            interactions=int(match.group(1)), span_days=int(match.group(2)), recent_30d=int(match.group(3)),
            days_since_last=int(match.group(4)), top_tags=tags(match.group(5)), recent_tags=tags(match.group(6)),
        )  # fmt: skip


_FACTS_RE = re.compile(
    r"Facts: (\d+) interactions over (\d+) days; (\d+) in the last 30 days; last one (\d+) days before the "
    r"request; top tags: ([^;]*); recent tags: ([^.]*)\."
)


class Abstract(WireModel):
    """The user abstract a_u of CDA4Rec III-B: all the cloud ever learns about the user."""

    sanitized_query: str = Field(
        max_length=MAX_SANITIZED_QUERY, description="The query's intent without identifiers; empty when none."
    )
    behavior_summary: str = Field(max_length=MAX_SUMMARY, description="SLM summary (if usable) + facts, scrubbed.")
    prompt: str = Field("abstract@2", max_length=64, description="name@version of the prompt used.")

    def as_text(self) -> str:
        """The abstract as it is placed in the planning prompt (Fig. 4 "User abstract: {}")."""
        return f"Query: {self.sanitized_query or '(none)'}. Behavior: {self.behavior_summary}"

    @property
    def facts(self) -> BehaviorFacts | None:
        """The computed facts sentence of the summary, parsed back (None when it is missing)."""
        return BehaviorFacts.from_text(self.behavior_summary)


# ---------------------------------------------------------------------------------------------- the plan


class SpaceMismatchError(TandemError):
    """The device and the cloud score e_sem against different item tables (Eq. 1's, or an encoder's)."""


class PlanError(TandemError):
    """A plan that cannot be made or used (e.g. a catalogue with too few tags, a model output with no plan)."""


def effective_beta(encoder: str, beta: float) -> float:
    """CDA4Rec Eq. 5 without a structured encoder has nothing to weigh against e_sem: beta is 1."""
    return 1.0 if encoder == "none" else beta


class Violation(WireModel):
    """One broken constraint, named by field and code (e.g. tags.unknown_tag)."""

    field: str
    code: str
    message: str


class ModuleExplanations(WireModel):
    """The rationale of each of the four modules (Fig. 4 "Explanation")."""

    semantic: str = Field(min_length=1, max_length=500)
    retrieval: str = Field(min_length=1, max_length=500)
    structured: str = Field(min_length=1, max_length=500)
    ranking: str = Field(min_length=1, max_length=500)


class Plan(WireModel):
    """The personalised strategy plan pi_u of CDA4Rec Fig. 4.

    Validate with `context={"known_tags": [...]}` to also check the tag names. "No encoder" always means
    beta = 1 (Eq. 5 has no structured term to weigh): that rule is applied here and nowhere else.
    """

    alpha: float = Field(ge=0.0, le=1.0, description="Query weight of Eq. 2; 1 - alpha weighs the summary.")
    tag_count: TagCount = Field(description="Number of tag groups to retrieve from.")
    candidate_size: CandidateSize = Field(description="Total candidates, = sum of N_i.")
    tags: dict[str, int] = Field(max_length=MAX_TAGS, description="Weighted tag dictionary N_u = {tag: N_i}, Eq. 3.")
    encoder: EncoderName = Field(description="Structured encoder f_loc of Eq. 4.")
    beta: float = Field(ge=0.0, le=1.0, description="Semantic weight of Eq. 5; 1 - beta weighs e_str.")
    explanations: ModuleExplanations

    @model_validator(mode="before")
    @classmethod
    def _no_encoder_means_semantics_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and "encoder" in data and "beta" in data:
            return {**data, "beta": effective_beta(data["encoder"], data["beta"])}
        return data

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Plan:
        problems = []
        if len(self.tags) != self.tag_count:
            problems.append(f"{len(self.tags)} tags but tag_count={self.tag_count}")
        if sum(self.tags.values()) != self.candidate_size:
            problems.append(f"tag counts sum to {sum(self.tags.values())}, not {self.candidate_size}")
        if any(n < 1 for n in self.tags.values()):
            problems.append("every N_i must be >= 1")
        if any(len(tag) > MAX_TAG_NAME for tag in self.tags):
            problems.append(f"a tag name is longer than {MAX_TAG_NAME} characters")
        known = (info.context or {}).get("known_tags") if info else None
        if known is not None:
            unknown = sorted(set(self.tags) - set(known))
            if unknown:
                problems.append(f"unknown tags {unknown}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def uses_encoder(self) -> bool:
        return self.encoder != "none"

    def to_lines(self) -> str:
        """The plan in the Fig. 4 output format."""
        tags = ", ".join(f"{tag}: {n}" for tag, n in self.tags.items())
        model = "None" if self.encoder == "none" else self.encoder
        why = " ".join(dict.fromkeys(getattr(self.explanations, m) for m in MODULES))
        return (
            f"Semantic User Modeling - {{query: {self.alpha:g}, behavior: {1 - self.alpha:.2g}}}\n"
            f"Candidate Retrieval - {{{tags}}}\n"
            f"Structured User Modeling - {{{model}}}\n"
            f"Final Ranking - {{semantic: {self.beta:g}, structured: {1 - self.beta:.2g}}}\n"
            f"Explanation - {{{why}}}"
        )


class PlanResult(WireModel):
    """A plan and how it was obtained (see `Status`), with every violation that was repaired or fell back."""

    plan: Plan
    status: Status
    violations: list[Violation] = Field(default_factory=list)
    raw_text: str = Field("", max_length=20_000)
    prompt: str | None = Field(None, description="name@version of the prompt that produced raw_text.")
    stats: dict[str, Any] | None = Field(None, description="CallStats of the model call, when there was one.")


# ---------------------------------------------------------------------------------------------- requests


class PlanRequest(WireModel):
    """CDA4Rec III-C: plan for this abstract."""

    abstract: Abstract


WireVersion = Literal[1, 2]
WIRE_VERSIONS: tuple[int, ...] = get_args(WireVersion)
"""Formats of the semantic answer: 1 = `SemanticResponse` (JSON lists; what every device before wire 2 reads),
2 = `CompactSemanticResponse`."""


class SemanticRequest(WireModel):
    """CDA4Rec III-D/E: Eq. 2 for this abstract with the plan's alpha, then Eq. 3 over the plan's tags.

    `wire` names the answer format the device reads. A device older than wire 2 never sends it and gets the
    JSON lists it always got; the field is left out of the message when unset, so a request without it is
    byte for byte what an old device sends (and what an old cloud accepts)."""

    abstract: Abstract
    plan: Plan
    wire: WireVersion | None = Field(None, exclude_if=lambda value: value is None,
                                     description="Answer format: 2 = CompactSemanticResponse; unset or 1 = "
                                     "SemanticResponse.")  # fmt: skip
    space: str | None = Field(None, max_length=200, exclude_if=lambda value: value is None,
                              description="The encoder item table the device holds for abstracts without a query "
                              "(`TextSpace.table_key`); unset: every answer in Eq. 1's table. A cloud whose "
                              "behaviour side is another table refuses.")

    @property
    def answer_wire(self) -> int:
        return self.wire or 1


class SemanticResponse(WireModel):
    """The cloud's semantic answer: e_sem and the tag-group candidates with their scores."""

    e_sem: list[float] = Field(max_length=MAX_EMBEDDING_DIM, description="Semantic user embedding (Eq. 2).")
    candidates: list[int] = Field(max_length=MAX_CANDIDATES, description="Merged top-N_i of each tag (Eq. 3).")
    scores: list[float] = Field(max_length=MAX_CANDIDATES, description="e_sem . e_i of each candidate.")


IDS_VARINT, IDS_BITMAP = 0, 1  # first byte of `CompactSemanticResponse.candidates`


class WireFormatError(ValueError):
    """A compact field that does not decode (bad base64, a truncated varint, a count that does not match)."""


def encode_ids(ids: np.ndarray) -> bytes:
    """A set of item ids (>= 1) in the fewer bytes of two codes, the first byte naming it: 0 = the ascending ids
    as LEB128 varints of their gaps (the first gap from 0), 1 = a bitmap over ids 0..max (LSB first)."""
    ordered = np.unique(np.asarray(ids, dtype=np.int64))
    varint = bytearray([IDS_VARINT])
    previous = 0
    for value in ordered.tolist():
        gap, previous = value - previous, value
        while gap >= 0x80:
            varint.append((gap & 0x7F) | 0x80)
            gap >>= 7
        varint.append(gap)
    if not len(ordered):
        return bytes(varint)
    mask = np.zeros(int(ordered[-1]) + 1, dtype=bool)
    mask[ordered] = True
    bitmap = bytes([IDS_BITMAP]) + np.packbits(mask, bitorder="little").tobytes()
    return bytes(varint) if len(varint) <= len(bitmap) else bitmap


def decode_ids(data: bytes) -> np.ndarray:
    """`encode_ids` backwards: the ids, ascending [C]."""
    if not data:
        raise WireFormatError("empty id code")
    kind, body = data[0], data[1:]
    if kind == IDS_BITMAP:
        return np.flatnonzero(np.unpackbits(np.frombuffer(body, dtype=np.uint8), bitorder="little")).astype(np.int64)
    if kind != IDS_VARINT:
        raise WireFormatError(f"unknown id code {kind}")
    out, value, shift, current = [], 0, 0, 0
    for byte in body:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            if shift > 35:
                raise WireFormatError("a varint longer than 5 bytes")
            continue
        current += value
        out.append(current)
        value, shift = 0, 0
    if shift:
        raise WireFormatError("the id code ends inside a varint")
    return np.asarray(out, dtype=np.int64)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WireFormatError(f"{what} is not base64") from None


class CompactSemanticResponse(WireModel):
    """Wire 2 of the semantic answer: e_sem and the candidate SET, without the scores.

    e_sem crosses as its float32 bytes (exactly the values the cloud computed); the candidates as a set of ids
    (`encode_ids`: gap varints or a bitmap, whichever is smaller); the scores e_sem . e_i (Eq. 3) are left off
    because the device holds the same item table and recomputes them, and with them the cloud's best-first
    order (score, then smaller id). Ranks are the same as from `SemanticResponse` whenever the cloud's scores
    are exact (the exact backend; Chroma's HNSW returns float32 inner products, equal to about 1e-6).
    """

    wire: Literal[2] = 2
    e_sem: str = Field(max_length=4 * MAX_EMBEDDING_DIM * 2, description="base64 of e_sem as float32, little-endian.")
    candidates: str = Field(max_length=8 * MAX_CANDIDATES, description="base64 of the candidate id set (encode_ids).")
    count: int = Field(ge=0, le=MAX_CANDIDATES, description="Number of candidates (checked against the decoded set).")

    @classmethod
    def encode(cls, e_sem: np.ndarray, candidates: np.ndarray) -> CompactSemanticResponse:
        vector = np.asarray(e_sem, dtype="<f4").reshape(-1)
        return cls(e_sem=base64.b64encode(vector.tobytes()).decode(), count=len(candidates),
                   candidates=base64.b64encode(encode_ids(candidates)).decode())  # fmt: skip

    def decode(self) -> tuple[np.ndarray, np.ndarray]:
        """e_sem [d] (float32) and the candidate ids, ascending [C]."""
        raw = _b64(self.e_sem, "e_sem")
        if len(raw) % 4:
            raise WireFormatError("e_sem is not a whole number of float32 values")
        ids = decode_ids(_b64(self.candidates, "candidates"))
        if len(ids) != self.count:
            raise WireFormatError(f"{len(ids)} candidates decoded, {self.count} announced")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32), ids

    @model_validator(mode="after")
    def _decodes(self) -> CompactSemanticResponse:
        self.decode()
        return self


class UserProfile(WireModel):
    """z_d of CHORD Eq. 6: what the device sends up instead of its history."""

    z: list[float] = Field(max_length=1024)


class StrategyRequest(WireModel):
    """CHORD: the device's user profile z (Eq. 6) and which encoder it runs; never the history itself."""

    encoder: str = Field(max_length=32)
    profile: UserProfile


class ChordStrategy(WireModel):
    """sigma'_d of CHORD Eq. 12-13 as it crosses the network: 2 bits per output channel, base64-encoded."""

    encoder: str = Field(description="Encoder the strategy is for (sasrec, caser).")
    layers: list[str] = Field(description="Quantizable layer names, in the order the codes follow.")
    channels: list[int] = Field(description="Output channels of each layer.")
    codes: str = Field(description="base64 of the packed 2-bit codes (0..3 -> 2/4/6/8 bits), 4 channels a byte.")
    beta: float = Field(description="Tiering parameter of CHORD Eq. 12 that produced it.")

    def payload(self) -> bytes:
        return base64.b64decode(self.codes)

    @property
    def payload_bits(self) -> int:
        """Bits of the encoded strategy itself (2 per channel, rounded up to a byte)."""
        return 8 * len(self.payload())


# ---------------------------------------------------------------------------------------------- crossings


Route = Literal["plan", "semantic", "strategy"]
ROUTES: tuple[str, ...] = get_args(Route)


class Crossing(WireModel):
    """One request/response across the boundary: which route, bytes each way, wall time."""

    route: Route
    bytes_up: int
    bytes_down: int
    seconds: float
    ok: bool

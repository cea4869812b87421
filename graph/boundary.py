"""The device<->cloud boundary: every crossing is a serialised pydantic message, timed and measured.

The device graph never hands Python objects to the cloud. It calls `Boundary.call(route, request,
ResponseType)`, which serialises the request to JSON bytes, sends them through a transport (in process,
or HTTP to `tandem cloud serve`), validates the reply into `ResponseType` and records a `Crossing` with
bytes each way and wall time. Both transports run the very same handlers (`cloud_handlers`), which call the
`CloudAgent`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agents.cloud.agent import CloudAgent
from ground.errors import TandemError
from tools.protocol import (
    Crossing,
    PlanRequest,
    Route,
    SemanticRequest,
    SemanticResponse,
    StrategyRequest,
)

Response = TypeVar("Response", bound=BaseModel)


class CloudUnavailableError(TandemError):
    """The cloud could not be reached, timed out, or answered something that is not a valid message."""


Handler = Callable[[bytes], bytes]


def cloud_handlers(cloud: CloudAgent) -> dict[str, Handler]:
    """Route name -> bytes handler over the cloud agent, shared by the in-process and HTTP transports.

    Each request body is validated into its protocol model (unknown fields are refused) before the agent
    sees it; each reply is the protocol model's JSON.
    """

    def plan(payload: bytes) -> bytes:
        request = PlanRequest.model_validate_json(payload)
        return cloud.plan(request.abstract).model_dump_json().encode()

    def semantic(payload: bytes) -> bytes:
        request = SemanticRequest.model_validate_json(payload)
        answer = cloud.semantic(request.abstract, request.plan)
        reply = SemanticResponse(e_sem=answer.e_sem.tolist(), candidates=answer.candidates.tolist(),
                                 scores=answer.scores.tolist())  # fmt: skip
        return reply.model_dump_json().encode()

    def strategy(payload: bytes) -> bytes:
        return cloud.strategy(StrategyRequest.model_validate_json(payload)).model_dump_json().encode()

    return {"plan": plan, "semantic": semantic, "strategy": strategy}


class Transport(Protocol):
    def send(self, route: str, payload: bytes) -> bytes: ...


class InProcessTransport:
    """Calls the cloud handlers directly, still through bytes, so the boundary is the same as over HTTP."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers

    def send(self, route: str, payload: bytes) -> bytes:
        try:
            return self.handlers[route](payload)
        except TandemError as exc:  # the cloud refused (e.g. no CHORD for that encoder): as HTTP would say 422
            raise CloudUnavailableError(f"cloud refused /{route}: {exc}") from exc


class HttpTransport:
    """POSTs each message to `<base_url>/<route>` of a `tandem cloud serve` instance."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(timeout=timeout)

    def send(self, route: str, payload: bytes) -> bytes:
        try:
            reply = self.client.post(
                f"{self.base_url}/{route}", content=payload, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise CloudUnavailableError(f"cloud at {self.base_url} unreachable: {type(exc).__name__}") from exc
        if reply.status_code != 200:
            raise CloudUnavailableError(f"cloud answered {reply.status_code} on /{route}: {reply.text[:200]}")
        return reply.content


class Boundary:
    """Serialises, sends, validates and records every device<->cloud message."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def call(self, route: Route, request: BaseModel, response_type: type[Response]) -> tuple[Response, Crossing]:
        payload = request.model_dump_json().encode()
        start = time.perf_counter()
        try:
            raw = self.transport.send(route, payload)
            reply = response_type.model_validate_json(raw)
        except CloudUnavailableError:
            raise
        except ValidationError as exc:
            raise CloudUnavailableError(f"cloud answered an invalid {response_type.__name__} on /{route}") from exc
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise CloudUnavailableError(f"cloud call /{route} failed: {type(exc).__name__}") from exc
        return reply, Crossing(
            route=route, bytes_up=len(payload), bytes_down=len(raw), seconds=time.perf_counter() - start, ok=True
        )

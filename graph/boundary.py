"""The device<->cloud boundary: every crossing is a serialised pydantic message, timed and measured.

The device graph never hands Python objects to the cloud. It calls `Boundary.call(route, request,
ResponseType)`, which serialises the request to JSON bytes, sends them through a transport (in process,
or HTTP to `tandem cloud serve`), validates the reply into `ResponseType` and records a `Crossing` with
bytes each way and wall time. Both transports run the very same handlers (`cloud_handlers`), which call the
`CloudAgent`.

Nothing the cloud says is trusted. Every call has one overall deadline (`Settings.cloud_deadline`), whatever
the transport: a cloud that trickles a byte every few seconds, or an in-process cloud stuck in a dependency,
is given up at the deadline. A reply must then pass the device's checks for the request it answers
(`check`, from `agents.device.replies`) before anyone uses or caches it. Each of these failures is a
`CloudUnavailableError`, which the graph turns into its cloud-down route with a warning.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, ValidationError

from agents.cloud.agent import CloudAgent
from agents.device.replies import UntrustedReplyError
from ground.errors import DependencyUnavailableError, TandemError
from tools.protocol import (
    CompactSemanticResponse,
    Crossing,
    PlanRequest,
    Route,
    SemanticRequest,
    SemanticResponse,
    SpaceMismatchError,
    StrategyRequest,
)

Response = TypeVar("Response", bound=BaseModel)


DEFAULT_DEADLINE = 30.0
DEFAULT_MAX_REPLY_BYTES = 16 * 1024 * 1024


class CloudUnavailableError(TandemError):
    """The cloud could not be reached, timed out, or answered something that is not a valid message."""


class CloudRefusedError(CloudUnavailableError):
    """The cloud answered with an error status; `status` and its parsed `detail` say why."""

    def __init__(self, message: str, status: int, detail: object) -> None:
        super().__init__(message)
        self.status, self.detail = status, detail

    def refuses_field(self, name: str) -> bool:
        """A 422 that refuses the request field `name`: what a cloud older than that field answers. Tandem's
        cloud service says "invalid message: N error(s), first at <field>" (`graph.service`); a plain FastAPI
        service gives its validation errors, `extra_forbidden` at loc [..., <field>]."""
        if self.status != 422:
            return False
        if isinstance(self.detail, str):
            return re.fullmatch(rf"invalid message: 1 error\(s\), first at (?:body\.)?{re.escape(name)}",
                                self.detail) is not None  # fmt: skip
        errors = self.detail if isinstance(self.detail, list) else []
        return any(isinstance(e, dict) and e.get("type") == "extra_forbidden" and list(e.get("loc", []))[-1:] == [name]
                   for e in errors)  # fmt: skip


class InvalidReplyError(CloudUnavailableError):
    """The cloud answered a well-formed message that does not fit the request (never used, never cached)."""


def printable(text: str, limit: int = 200) -> str:
    """Text from the other side of the wire, cut to `limit` characters with control characters removed."""
    return "".join(ch if ch.isprintable() else " " for ch in text[:limit])


Handler = Callable[[bytes], bytes]


def cloud_handlers(cloud: CloudAgent) -> dict[str, Handler]:
    """Route name -> bytes handler over the cloud agent, shared by the in-process and HTTP transports.

    Each request body is validated into its protocol model (unknown fields are refused) before the agent
    sees it; each reply is the protocol model's JSON (the semantic answer in the wire version the request asks
    for: none or 1 = `SemanticResponse`, 2 = `CompactSemanticResponse`).
    """

    def plan(payload: bytes) -> bytes:
        request = PlanRequest.model_validate_json(payload)
        return cloud.plan(request.abstract).model_dump_json().encode()

    def semantic(payload: bytes) -> bytes:
        request = SemanticRequest.model_validate_json(payload)
        held = cloud.behaviour.space.table_key if cloud.behaviour is not None else None
        behaviour = request.space is not None and request.space == held
        if request.space is not None and not behaviour and not request.abstract.sanitized_query.strip():
            raise SpaceMismatchError(f"the device scores e_sem without a query in item space {request.space}; this "
                                     f"cloud's is {held or 'the text space (it has no semantic tower)'}")  # fmt: skip
        answer = cloud.semantic(request.abstract, request.plan, behaviour=behaviour)
        if request.answer_wire == 2:
            return CompactSemanticResponse.encode(answer.e_sem, answer.candidates).model_dump_json().encode()
        reply = SemanticResponse(e_sem=answer.e_sem.tolist(), candidates=answer.candidates.tolist(),
                                 scores=answer.scores.tolist())  # fmt: skip
        return reply.model_dump_json().encode()

    def strategy(payload: bytes) -> bytes:
        return cloud.strategy(StrategyRequest.model_validate_json(payload)).model_dump_json().encode()

    return {"plan": plan, "semantic": semantic, "strategy": strategy}


class Transport(Protocol):
    def send(self, route: str, payload: bytes) -> bytes: ...


class InProcessTransport:
    """Calls the cloud handlers directly, still through bytes, so the boundary is the same as over HTTP.

    The handler runs on its own thread so the call can be given up at the deadline like an HTTP call (the
    thread finishes in the background and its answer is dropped). A dependency failure of the cloud (Chroma,
    the planner model) or any other exception in it is the cloud failing, as an HTTP 503/500 would be.
    """

    def __init__(self, handlers: dict[str, Handler], deadline: float = DEFAULT_DEADLINE) -> None:
        self.handlers = handlers
        self.deadline = deadline

    def send(self, route: str, payload: bytes) -> bytes:
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["reply"] = self.handlers[route](payload)
            except Exception as exc:  # handed to the caller's thread below
                outcome["error"] = exc
            finally:
                done.set()

        # a daemon thread: a cloud stuck past the deadline must not keep the process from exiting
        threading.Thread(target=work, name=f"tandem-cloud-{route}", daemon=True).start()
        if not done.wait(self.deadline):
            raise CloudUnavailableError(f"cloud gave no answer on /{route} within the {self.deadline:g} s deadline")
        try:
            if "error" in outcome:
                raise outcome["error"]
            return outcome["reply"]
        except DependencyUnavailableError as exc:
            raise CloudUnavailableError(f"cloud dependency {exc.dependency} failed on /{route}: {exc}") from exc
        except TandemError as exc:  # the cloud refused (e.g. no CHORD for that encoder): as HTTP would say 422
            raise CloudUnavailableError(f"cloud refused /{route}: {exc}") from exc
        except Exception as exc:  # a failure inside the cloud is the cloud being down, as an HTTP 500 would be
            message = f"cloud failed on /{route}: {type(exc).__name__}: {printable(str(exc))}"
            raise CloudUnavailableError(message) from exc


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback interface."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Watchdog:
    """One overall deadline for one HTTP call: at expiry, the call's socket is shut down, which ends any read
    in progress (httpx's own timeouts are per read, so a server trickling bytes would never trip them)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore trace hook: remember the socket of every connection this call opens."""
        if event.endswith("connect_tcp.complete") and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                if sock is not None:
                    self._sockets.append(sock)
                expired = self.expired
            if expired and sock is not None:
                self._shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: nothing left to stop

    def remaining(self, started: float) -> float:
        return max(0.001, self.seconds - (time.monotonic() - started))

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class HttpTransport:
    """POSTs each message to `<base_url>/<route>` of a `tandem cloud serve` instance.

    Sends the bearer token when one is set, gives every call one overall deadline (see `_Watchdog`; a fresh
    connection per call, so the watchdog always knows the socket to stop) and reads at most
    `max_reply_bytes` of an answer.
    """

    def __init__(self, base_url: str, *, token: str | None = None, deadline: float = DEFAULT_DEADLINE,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> None:  # fmt: skip
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise TandemError(f"cloud URL {printable(base_url, 80)!r} is not an http(s)://host[:port] URL")
        self.base_url = base_url.rstrip("/")
        self.deadline = deadline
        self.max_reply_bytes = max_reply_bytes
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"
        self.client = httpx.Client(timeout=self.deadline, limits=httpx.Limits(max_keepalive_connections=0))

    def send(self, route: str, payload: bytes) -> bytes:
        started = time.monotonic()
        with _Watchdog(self.deadline) as watchdog:
            try:
                with self.client.stream("POST", f"{self.base_url}/{route}", content=payload, headers=self.headers,
                                        extensions={"trace": watchdog.trace}) as reply:  # fmt: skip
                    body = self._read(reply, route)
            except httpx.HTTPError as exc:
                if watchdog.expired or time.monotonic() - started >= self.deadline:
                    raise CloudUnavailableError(f"cloud at {self.base_url} gave no complete answer on /{route} "
                                                f"within the {self.deadline:g} s deadline") from None  # fmt: skip
                raise CloudUnavailableError(f"cloud at {self.base_url} unreachable: {type(exc).__name__}") from None
        if reply.status_code != 200:
            raise CloudRefusedError(f"cloud answered {reply.status_code} on /{route}: {self._detail(reply, body)}",
                                    reply.status_code, self._parsed_detail(body))  # fmt: skip
        return body

    def _read(self, reply: httpx.Response, route: str) -> bytes:
        chunks, size = [], 0
        for chunk in reply.iter_bytes():
            size += len(chunk)
            if size > self.max_reply_bytes:
                raise CloudUnavailableError(f"cloud answer on /{route} exceeds {self.max_reply_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parsed_detail(body: bytes) -> object:
        """FastAPI's `detail` of an error answer as parsed JSON (None when the body is not such JSON)."""
        try:
            parsed = json.loads(body[:65536])
        except ValueError:
            return None
        return parsed.get("detail") if isinstance(parsed, dict) else None

    @staticmethod
    def _detail(reply: httpx.Response, body: bytes) -> str:
        """The error's one-line detail (FastAPI's `detail`, or the start of the body), printable only."""
        text = body[:2000].decode("utf-8", "replace")
        try:
            detail = httpx.Response(200, content=body).json().get("detail", text)
        except (ValueError, AttributeError):
            detail = text
        retry = reply.headers.get("retry-after")
        suffix = f" (retry after {printable(retry, 10)} s)" if retry else ""
        return printable(str(detail)) + suffix


class Boundary:
    """Serialises, sends, validates and records every device<->cloud message."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def call(self, route: Route, request: BaseModel, response_type: type[Response],
             check: Callable[[Response], Response] | None = None) -> tuple[Response, Crossing]:  # fmt: skip
        """Send `request`, parse the reply into `response_type`, and pass it through the device's `check`.

        Any failure (unreachable, deadline, not a valid message, a message that fails the check) is a
        `CloudUnavailableError`; nothing of a failed reply reaches the caller.
        """
        payload = request.model_dump_json().encode()
        start = time.perf_counter()
        try:
            raw = self.transport.send(route, payload)
            reply = response_type.model_validate_json(raw)
            if check is not None:
                reply = check(reply)
        except CloudUnavailableError:
            raise
        except UntrustedReplyError as exc:
            raise InvalidReplyError(f"cloud answered an unusable {response_type.__name__} on /{route}: {exc}") from exc
        except ValidationError as exc:
            raise InvalidReplyError(f"cloud answered an invalid {response_type.__name__} on /{route}") from exc
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise CloudUnavailableError(f"cloud call /{route} failed: {type(exc).__name__}") from exc
        return reply, Crossing(
            route=route, bytes_up=len(payload), bytes_down=len(raw), seconds=time.perf_counter() - start, ok=True
        )

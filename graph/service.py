"""The HTTP face of the cloud agent (`tandem cloud serve`): POST /plan, /semantic and /strategy with JSON messages.

It runs the same handlers as the in-process transport (`graph.boundary.cloud_handlers`), and lets in only
its devices, within bounds:
- a bearer token (`TANDEM_CLOUD_TOKEN`) on every POST (401 without it), required to bind beyond loopback;
- a body size limit (413) and the protocol's field limits with unknown fields refused (422);
- slow clients cut off: the request head and the body must each arrive within `cloud_client_timeout`
  (the connection is closed / 408);
- language-model plans run at most `cloud_plan_slots` at once with at most `cloud_plan_queue` waiting (and
  only while the expected wait stays within `cloud_plan_max_wait`); beyond that they are refused at once
  with 503 + Retry-After, so /health and the rule paths stay responsive;
- a failing dependency (Chroma, the index) is 503 naming it, never a 500; GET /health reports each
  dependency (chroma, index, planner) and answers 503 when one is down;
- /docs and /openapi.json only when asked for (`cloud_docs`), one access-log line per request, and a
  graceful stop on SIGTERM bounded by `cloud_shutdown_timeout`.

Kept apart from the boundary so FastAPI is imported only by the process that serves. No
`from __future__ import annotations` here: FastAPI reads the handler annotations at run time.
"""

import hmac
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import h11
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol

from agents.cloud.agent import CloudAgent
from graph.boundary import Handler, cloud_handlers, is_loopback, printable
from ground.errors import DependencyUnavailableError, TandemError
from ground.settings import Settings

access_log = logging.getLogger("tandem.cloud.access")
error_log = logging.getLogger("tandem.cloud")
HEALTH_TIMEOUT = 3.0  # seconds the dependency checks of /health may take before they count as failed
DEPENDENCY_RETRY_AFTER = 5  # seconds a device is told to wait after a dependency failure


@dataclass(frozen=True)
class ServiceLimits:
    """The service's bounds (see the module docstring); `from_settings` reads the `cloud_*` settings."""

    max_body_bytes: int = 64 * 1024
    plan_slots: int = 1
    plan_queue: int = 4
    plan_max_wait: float = 20.0
    workers: int = 4
    client_timeout: float = 10.0
    max_connections: int = 256
    shutdown_timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "ServiceLimits":
        return cls(
            max_body_bytes=settings.cloud_max_body_bytes, plan_slots=settings.cloud_plan_slots,
            plan_queue=settings.cloud_plan_queue, plan_max_wait=settings.cloud_plan_max_wait,
            workers=settings.cloud_workers,
            client_timeout=settings.cloud_client_timeout, max_connections=settings.cloud_max_connections,
            shutdown_timeout=settings.cloud_shutdown_timeout,
        )  # fmt: skip


class RequestRefused(Exception):
    """An HTTP error answer: status, one-line detail, extra headers and JSON fields."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None, **fields: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.fields = status, detail, headers or {}, fields

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail, **self.fields}, status_code=self.status, headers=self.headers)


class Admission:
    """Bounded concurrency for language-model planning: `slots` plans run at once, at most `queue` more wait,
    and only while their expected wait (queue ahead x recent mean plan time) stays within `max_wait` seconds
    (so a device is not kept past its deadline on a loaded machine). The rest are refused at once (503) with
    a Retry-After estimated from recent plan times."""

    def __init__(self, slots: int, queue: int, max_wait: float = 20.0) -> None:
        self.slots, self.queue, self.max_wait = slots, queue, max_wait
        self.in_flight = 0
        self.mean_seconds = 2.0
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def running(self) -> int:
        return min(self.in_flight, self.slots)

    @property
    def waiting(self) -> int:
        return max(0, self.in_flight - self.slots)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, at the recent mean plan time."""
        return max(1, min(300, math.ceil(self.mean_seconds * (self.waiting + 1) / self.slots)))

    def full(self) -> bool:
        if self.in_flight < self.slots:
            return False
        expected_wait = self.mean_seconds * (self.waiting + 1) / self.slots
        return self.in_flight >= self.slots + self.queue or expected_wait > self.max_wait

    async def run(self, fn: Callable[[bytes], bytes], payload: bytes) -> bytes:
        if self.full():
            raise RequestRefused(503, f"planning is at capacity ({self.slots} running, {self.queue} waiting)",
                                 {"Retry-After": str(self.retry_after())}, dependency="planner")  # fmt: skip
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)
        self.in_flight += 1
        try:
            async with self._limiter:
                start = time.monotonic()
                answer = await anyio.to_thread.run_sync(fn, payload)
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * (time.monotonic() - start)
                return answer
        finally:
            self.in_flight -= 1


def _bearer_ok(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def _read_body(request: Request, limits: ServiceLimits) -> bytes:
    """The request body, at most `max_body_bytes` (413), arriving within `client_timeout` (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limits.max_body_bytes):
        raise RequestRefused(413, f"request body larger than {limits.max_body_bytes} bytes")
    chunks, size = [], 0
    try:
        with anyio.fail_after(limits.client_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body_bytes:
                    raise RequestRefused(413, f"request body larger than {limits.max_body_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestRefused(408, f"request body not received within {limits.client_timeout:g} s") from None
    return b"".join(chunks)


def create_app(cloud: CloudAgent, dataset: str, *, token: str | None = None, limits: ServiceLimits | None = None,
               docs: bool = False) -> FastAPI:  # fmt: skip
    """A FastAPI app running the same handlers as the in-process transport; GET /health for probes."""
    limits = limits or ServiceLimits()
    docs_urls = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="Tandem cloud", version="1", **docs_urls)
    handlers = cloud_handlers(cloud)
    planning = None if cloud.planner_model is None else Admission(limits.plan_slots, limits.plan_queue,
                                                                  limits.plan_max_wait)  # fmt: skip
    limiters: dict[str, anyio.CapacityLimiter] = {}

    def limiter(name: str, size: int) -> anyio.CapacityLimiter:
        if name not in limiters:  # created inside the event loop, on first use
            limiters[name] = anyio.CapacityLimiter(size)
        return limiters[name]

    @app.middleware("http")
    async def log_access(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            client = f"{request.client.host}:{request.client.port}" if request.client else "-"
            access_log.info('%s "%s %s" %d %.1fms', client, request.method, printable(request.url.path, 100),
                            status, 1000 * (time.perf_counter() - start))  # fmt: skip

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                report = await anyio.to_thread.run_sync(cloud.health, limiter=limiter("health", 1),
                                                        abandon_on_cancel=True)  # fmt: skip
        except TimeoutError:
            report = {"checks": {"ok": False, "error": f"dependency checks took over {HEALTH_TIMEOUT:g} s"}}
        ok = all(part.get("ok") for part in report.values())
        body: dict[str, Any] = {"status": "ok" if ok else "degraded", "dataset": dataset, "dependencies": report}
        if planning is not None:
            body["planning"] = {"running": planning.running, "waiting": planning.waiting, "slots": planning.slots,
                                "queue": planning.queue, "mean_plan_s": round(planning.mean_seconds, 3)}  # fmt: skip
        return JSONResponse(body, status_code=200 if ok else 503)

    async def answer(route: str, request: Request) -> Response:
        try:
            if not _bearer_ok(request, token):
                raise RequestRefused(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
            payload = await _read_body(request, limits)
            handler: Handler = handlers[route]
            if route == "plan" and planning is not None:
                body = await planning.run(handler, payload)
            else:
                body = await anyio.to_thread.run_sync(handler, payload, limiter=limiter("work", limits.workers))
        except RequestRefused as refused:
            return refused.response()
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"
            return RequestRefused(422, f"invalid message: {exc.error_count()} error(s), first at {where}").response()
        except DependencyUnavailableError as exc:
            error_log.warning("dependency %s failed on /%s: %s", exc.dependency, route, exc)
            return RequestRefused(503, str(exc), {"Retry-After": str(DEPENDENCY_RETRY_AFTER)},
                                  dependency=exc.dependency).response()  # fmt: skip
        except TandemError as exc:
            return RequestRefused(422, str(exc)).response()
        except Exception:  # a bug: logged with its traceback here, one line to the client
            error_log.exception("unexpected failure on /%s", route)
            return RequestRefused(500, "internal error").response()
        return Response(body, media_type="application/json")

    for route in handlers:
        app.add_api_route(f"/{route}", _route_endpoint(answer, route), methods=["POST"], name=route)
    return app


def _route_endpoint(answer: Callable[[str, Request], Awaitable[Response]], route: str):
    async def endpoint(request: Request) -> Response:
        return await answer(route, request)

    endpoint.__name__ = route
    return endpoint


class SlowClientH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head has not fully arrived `head_timeout` s
    after the connection opened or the previous response ended (uvicorn itself waits forever for it).

    Module-level so uvicorn's worker processes can import it by name (`graph.service:SlowClientH11Protocol`);
    each process sets `head_timeout` from its settings before it serves (`slow_client_protocol`, `app_factory`).
    """

    head_timeout: float = 10.0
    _head_timer: Any = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_expired)

    def _head_expired(self) -> None:
        waiting_for_head = self.conn.their_state in (h11.IDLE, h11.DONE) and (
            self.cycle is None or self.cycle.response_complete
        )
        if waiting_for_head and not self.transport.is_closing():
            error_log.info("closed a connection whose request head took over %g s", self.head_timeout)
            self.transport.close()


def slow_client_protocol(head_timeout: float) -> type[H11Protocol]:
    """`SlowClientH11Protocol` with its head timeout set to `head_timeout` seconds (this process)."""
    SlowClientH11Protocol.head_timeout = head_timeout
    return SlowClientH11Protocol


def check_binding(host: str, token: str | None) -> None:
    """Beyond loopback the service must have a token: otherwise one line, and no server."""
    if token is None and not is_loopback(host):
        raise TandemError(f"refusing to serve on {host} without a token: set TANDEM_CLOUD_TOKEN (16+ characters), "
                          "or bind to 127.0.0.1")  # fmt: skip


def _log_to_stderr() -> None:
    for logger in (access_log, error_log):
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def _uvicorn_options(limits: ServiceLimits) -> dict[str, Any]:
    return dict(log_level="warning", access_log=False, timeout_keep_alive=5, limit_concurrency=limits.max_connections,
                timeout_graceful_shutdown=math.ceil(limits.shutdown_timeout), server_header=False)  # fmt: skip


def serve(cloud: CloudAgent, dataset: str, settings: Settings, host: str, port: int) -> None:
    """Run the hardened service until SIGTERM / Ctrl-C (graceful, bounded by `cloud_shutdown_timeout`)."""
    token = settings.cloud_token.get_secret_value() if settings.cloud_token else None
    check_binding(host, token)
    limits = ServiceLimits.from_settings(settings)
    _log_to_stderr()
    app = create_app(cloud, dataset, token=token, limits=limits, docs=settings.cloud_docs)
    config = uvicorn.Config(app, host=host, port=port, http=slow_client_protocol(limits.client_timeout),
                            **_uvicorn_options(limits))  # fmt: skip
    uvicorn.Server(config).run()


# -- replicas: N worker processes on one socket ---------------------------------------------------------------

REPLICA_ENV = "TANDEM_CLOUD_REPLICA"  # what each worker process builds: {"data": ..., "planner": ...} as JSON


def app_factory() -> FastAPI:
    """The app of one worker process of `serve_workers`: its own runtime (data, index, planner) from the settings
    (the environment and tandem.toml, as the parent read them) and the spec the parent left in `REPLICA_ENV`.
    A worker holds no state another needs: the service is stateless, so replicas need no coordination."""
    import json
    import os

    from graph.runtime import TandemRuntime  # deferred: the parent imports this module without building
    from ground.settings import get_settings

    spec = json.loads(os.environ[REPLICA_ENV])
    if spec.get("torch_threads"):  # N workers each with every core's torch threads oversubscribe the CPU
        import torch

        torch.set_num_threads(int(spec["torch_threads"]))
    settings = get_settings()
    limits = ServiceLimits.from_settings(settings)
    slow_client_protocol(limits.client_timeout)
    _log_to_stderr()
    runtime = TandemRuntime.create(settings, spec["data"], planner=spec["planner"], progress=False)
    token = settings.cloud_token.get_secret_value() if settings.cloud_token else None
    error_log.info("worker %d serves %s (%s planner)", os.getpid(), runtime.workspace.dataset.name, spec["planner"])
    return create_app(runtime.cloud, runtime.workspace.dataset.name, token=token, limits=limits,
                      docs=settings.cloud_docs)  # type: ignore[arg-type]  # fmt: skip


def serve_workers(data: str, planner: str, settings: Settings, host: str, port: int, workers: int) -> None:
    """`workers` uvicorn worker processes sharing one listening socket, each running `app_factory` (the
    kernel spreads connections over them); the parent supervises and stops them on SIGTERM / Ctrl-C. Each worker
    gets cores / workers torch threads: on a busy 2-core machine two threads per process made the text encoder
    6x slower than one (430 vs 68 ms p50 for Eq. 2's two texts, load average 8)."""
    import json
    import os

    token = settings.cloud_token.get_secret_value() if settings.cloud_token else None
    check_binding(host, token)
    limits = ServiceLimits.from_settings(settings)
    threads = max(1, (os.cpu_count() or 1) // workers)  # each worker's share of the cores for torch (Eq. 2's encoder)
    os.environ[REPLICA_ENV] = json.dumps({"data": data, "planner": planner, "torch_threads": threads})
    uvicorn.run("graph.service:app_factory", factory=True, host=host, port=port, workers=workers,
                http="graph.service:SlowClientH11Protocol", **_uvicorn_options(limits))  # fmt: skip

"""A real loopback HTTP cloud that misbehaves on purpose, for the device's fault-injection tests.

`FakeCloud` is a `ThreadingHTTPServer` on 127.0.0.1 in a background thread. It answers each POST with the
real cloud handlers (`graph.boundary.cloud_handlers` over a real `CloudAgent`), then applies the fault set
for that route: a wrong e_sem length, ids outside the catalogue, a short score list, NaN scores, a plan with
an unknown tag, bytes trickled one at a time (in the head or in the body), a 500, garbage JSON, or the 422 a
cloud service older than the compact wire gives a request that names the `wire` field (its validation
answer, as `tests/test_cloud_http.py` checks the real service gives for a field newer than itself). It
records every request it saw.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from graph.boundary import Handler

Fault = str
FAULTS: tuple[Fault, ...] = (
    "wrong_dim", "ids_out_of_range", "short_scores", "nan_scores", "duplicate_ids", "unknown_tag",
    "trickle_head", "trickle_body", "error_500", "garbage_json", "before_wire_2",
)  # fmt: skip


def _corrupt(fault: Fault, body: dict[str, Any], num_items: int) -> dict[str, Any]:
    """The genuine answer `body`, made wrong in one way."""
    if fault == "wrong_dim":
        return {**body, "e_sem": body["e_sem"][: len(body["e_sem"]) // 2]}
    if fault == "ids_out_of_range":
        return {**body, "candidates": [num_items + 7, *body["candidates"][1:]]}
    if fault == "short_scores":
        return {**body, "scores": body["scores"][:-3]}
    if fault == "nan_scores":
        return {**body, "scores": [float("nan"), *body["scores"][1:]]}
    if fault == "duplicate_ids":
        return {**body, "candidates": [body["candidates"][1], *body["candidates"][1:]]}
    if fault == "unknown_tag":
        plan = dict(body["plan"])
        tags = dict(plan["tags"])
        first = next(iter(tags))
        tags["Space Opera Noir"] = tags.pop(first)
        return {**body, "plan": {**plan, "tags": tags}}
    return body


class FakeCloud:
    """The real cloud's answers with `faults[route]` applied; `trickle_interval` s between trickled bytes."""

    def __init__(self, handlers: dict[str, Handler], num_items: int, trickle_interval: float = 0.5) -> None:
        self.handlers = handlers
        self.num_items = num_items
        self.trickle_interval = trickle_interval
        self.faults: dict[str, Fault] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.payloads: list[tuple[str, dict[str, Any]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-cloud", daemon=True)

    def __enter__(self) -> FakeCloud:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, route: str, payload: bytes) -> tuple[int, bytes, Fault | None]:
        fault = self.faults.get(route)
        if fault == "error_500":
            return 500, b'{"detail": "internal error"}', fault
        if fault == "garbage_json":
            return 200, b'{"e_sem": [0.1, 0.2', fault
        if fault == "before_wire_2" and "wire" in json.loads(payload):  # the 422 Tandem's cloud gives a new field
            return 422, b'{"detail": "invalid message: 1 error(s), first at wire"}', fault
        genuine = json.loads(self.handlers[route](payload))
        body = json.dumps(_corrupt(fault, genuine, self.num_items) if fault else genuine).encode()
        return 200, body, fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests assert instead
                pass

            def do_POST(self) -> None:
                route = self.path.strip("/")
                payload = self.rfile.read(int(self.headers.get("content-length", "0")))
                cloud.seen.append((route, dict(self.headers.items())))
                cloud.payloads.append((route, json.loads(payload or b"{}")))
                status, body, fault = cloud._answer(route, payload)
                head = (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
                try:
                    if fault == "trickle_head":
                        self._trickle(head + body)
                    elif fault == "trickle_body":
                        self.wfile.write(head)
                        self._trickle(body)
                    else:
                        self.wfile.write(head + body)
                except OSError:
                    pass  # the device gave up and closed the connection: what the trickle tests expect
                self.close_connection = True

            def _trickle(self, data: bytes) -> None:
                for at in range(len(data)):
                    self.wfile.write(data[at : at + 1])
                    self.wfile.flush()
                    time.sleep(cloud.trickle_interval)

        return Handler

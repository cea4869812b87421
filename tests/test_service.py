"""The hardened cloud service, against a real `tandem cloud serve` process on loopback: bearer token, body and
field limits, unknown fields, docs off, /health per dependency, slow clients, a bounded load, SIGTERM; and the
language-model admission control (503 + Retry-After) against the app served by uvicorn in a thread."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pydantic
import pytest
import uvicorn

from agents.backends import chat_model
from agents.device.encoders import EncoderShelf
from graph.run import recommend
from graph.runtime import TandemRuntime, build_cloud
from graph.service import Admission, ServiceLimits, create_app
from ground.settings import Settings
from tests.chroma_server import free_port
from tests.cloud_service import CLI, ROOT, cloud_process
from tools import protocol

TOKEN = "test-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BODY = 16 * 1024
ABSTRACT = {"sanitized_query": "a funny animated movie", "behavior_summary": "Likes comedies and animation."}
SERVICE_ENV = {"TANDEM_CLOUD_TOKEN": TOKEN, "TANDEM_CLOUD_MAX_BODY_BYTES": str(MAX_BODY),
               "TANDEM_CLOUD_CLIENT_TIMEOUT": "2", "TANDEM_CLOUD_SHUTDOWN_TIMEOUT": "3"}  # fmt: skip

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def service(settings, ready, tmp_path_factory):
    env = {"TANDEM_HOME": str(settings.home), **SERVICE_ENV}
    with cloud_process(tmp_path_factory.mktemp("cloud") / "cloud.log", planner="rule", env=env) as (url, proc):
        yield url


def post(url: str, route: str, body: dict | bytes, headers: dict | None = None, timeout: float = 30) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.post(f"{url}/{route}", content=content, headers=headers, timeout=timeout)


def a_plan(url: str) -> dict:
    reply = post(url, "plan", {"abstract": ABSTRACT}, AUTH)
    assert reply.status_code == 200, reply.text
    return reply.json()["plan"]


def test_bearer_token_is_required_on_every_route(service):
    for route, body in [("plan", {"abstract": ABSTRACT}), ("semantic", {"abstract": ABSTRACT, "plan": a_plan(service)}),
                        ("strategy", {"encoder": "sasrec", "profile": {"z": [0.0] * 32}})]:  # fmt: skip
        missing = post(service, route, body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert post(service, route, body, {"authorization": "Bearer not-the-token-at-all"}).status_code == 401
        assert post(service, route, body, {"authorization": TOKEN}).status_code == 401, "the scheme is required"
    assert post(service, "plan", {"abstract": ABSTRACT}, AUTH).status_code == 200
    assert httpx.get(f"{service}/health", timeout=10).status_code == 200, "probes need no token"


def test_devices_send_the_token_and_a_device_without_it_takes_the_fallback(service, settings, tmp_path):
    with_token = Settings(home=settings.home, cloud_token=TOKEN)
    rt = TandemRuntime.create(with_token, "ml-100k", planner="rule", cloud_url=service,
                              store_path=str(tmp_path / "a.db"), progress=False)  # fmt: skip
    assert recommend(rt, "196", "a funny animated movie", allow_rerequest=False)["source"] == "cloud"

    without = TandemRuntime.create(settings, "ml-100k", planner="rule", cloud_url=service,
                                   store_path=str(tmp_path / "b.db"), progress=False)  # fmt: skip
    state = recommend(without, "196", "a funny animated movie", allow_rerequest=False)
    assert state["source"] == "device_only"
    assert any("401" in w and "bearer token" in w for w in state["warnings"]), state["warnings"]


def test_body_size_limit_is_413_with_or_without_a_content_length(service):
    big = json.dumps({"abstract": {**ABSTRACT, "behavior_summary": "x" * (2 * MAX_BODY)}}).encode()
    assert post(service, "plan", big, AUTH).status_code == 413

    def chunks():
        for at in range(0, len(big), 4096):
            yield big[at : at + 4096]

    chunked = httpx.post(f"{service}/plan", content=chunks(), headers=AUTH, timeout=30)
    assert chunked.status_code == 413


@pytest.mark.parametrize("smuggled", [{"history": [1, 2, 3]}, {"titles": ["Toy Story"]}])
def test_unknown_fields_are_refused_on_every_route(service, smuggled):
    plan = a_plan(service)
    bodies = {
        "plan": [{"abstract": ABSTRACT, **smuggled}, {"abstract": {**ABSTRACT, **smuggled}}],
        "semantic": [{"abstract": ABSTRACT, "plan": plan, **smuggled},
                     {"abstract": ABSTRACT, "plan": {**plan, **smuggled}}],
        "strategy": [{"encoder": "sasrec", "profile": {"z": [0.0] * 32}, **smuggled}],
    }  # fmt: skip
    for route, cases in bodies.items():
        for body in cases:
            reply = post(service, route, body, AUTH)
            assert reply.status_code == 422, (route, body, reply.text)
            assert next(iter(smuggled)) in reply.json()["detail"]


def test_field_limits_are_422(service):
    long_query = {"abstract": {**ABSTRACT, "sanitized_query": "q" * 5000}}
    assert post(service, "plan", long_query, AUTH).status_code == 422
    plan = a_plan(service)
    many_tags = {**plan, "tags": {f"t{n}": 1 for n in range(40)}, "tag_count": 20, "candidate_size": 500}
    assert post(service, "semantic", {"abstract": ABSTRACT, "plan": many_tags}, AUTH).status_code == 422
    long_profile = {"encoder": "sasrec", "profile": {"z": [0.0] * 2000}}
    assert post(service, "strategy", long_profile, AUTH).status_code == 422
    assert post(service, "plan", b"{not json", AUTH).status_code == 422


def test_every_wire_model_forbids_unknown_fields():
    models = [m for m in vars(protocol).values() if isinstance(m, type) and issubclass(m, pydantic.BaseModel)]
    models = [m for m in models if m.__module__ == protocol.__name__]
    assert len(models) >= 10
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__


def test_admission_refuses_beyond_the_queue_or_the_expected_wait():
    admission = Admission(slots=1, queue=4, max_wait=20.0)
    admission.mean_seconds = 10.0
    verdicts = []
    for in_flight in range(6):
        admission.in_flight = in_flight
        verdicts.append(admission.full())
    assert verdicts == [False, False, False, True, True, True], "1 running + 1 waiting = 20 s expected: the limit"
    admission.mean_seconds = 1.0
    admission.in_flight = 4
    assert not admission.full() and admission.retry_after() >= 1
    admission.in_flight = 5
    assert admission.full(), "never more than slots + queue, however fast the plans"


def test_docs_endpoints_are_off(service):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{service}{path}", timeout=10).status_code == 404


def test_health_reports_each_dependency(service):
    reply = httpx.get(f"{service}/health", timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "ok"
    assert set(body["dependencies"]) == {"chroma", "index", "planner"}
    assert body["dependencies"]["index"]["tags"] > 0 and body["dependencies"]["planner"]["kind"] == "rule"


def test_slow_clients_are_cut_off(service):
    host, port = service.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as head:  # a head that never completes
        start = time.monotonic()
        head.sendall(b"POST /plan HTTP/1.1\r\nHost: x\r\n")
        assert head.recv(100) == b"", "the server must close a connection whose head does not arrive"
        assert time.monotonic() - start < 2 + 8
    with socket.create_connection((host, int(port)), timeout=10) as body:  # a body that never completes
        body.sendall(f"POST /plan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{".encode())  # fmt: skip
        answer = body.recv(200)
        assert answer.startswith(b"HTTP/1.1 408"), answer


def test_bounded_loopback_load(service):
    """40 devices at once, each plan + semantic: every request answered, /health still quick meanwhile."""

    def device(n: int) -> tuple[int, int]:
        abstract = {**ABSTRACT, "sanitized_query": f"{ABSTRACT['sanitized_query']} {n}"}
        plan = post(service, "plan", {"abstract": abstract}, AUTH)
        semantic = post(service, "semantic", {"abstract": abstract, "plan": plan.json()["plan"]}, AUTH)
        return plan.status_code, semantic.status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        futures = [pool.submit(device, n) for n in range(40)]
        time.sleep(0.2)
        start = time.monotonic()
        health = httpx.get(f"{service}/health", timeout=30)
        health_s = time.monotonic() - start
        codes = [f.result() for f in futures]
    assert codes == [(200, 200)] * 40
    assert health.status_code == 200 and health_s < 5.0, f"/health took {health_s:.1f} s under load"


def test_refuses_to_bind_beyond_loopback_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TANDEM_CLOUD_TOKEN"}
    done = subprocess.run([*CLI, "cloud", "serve", "--host", "0.0.0.0", "--port", str(free_port())], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TANDEM_CLOUD_TOKEN" in lines[0], done.stderr


def test_sigterm_stops_the_service_promptly_even_with_a_client_mid_request(settings, ready, tmp_path):
    env = {"TANDEM_HOME": str(settings.home), **SERVICE_ENV, "TANDEM_CLOUD_CLIENT_TIMEOUT": "60"}
    with cloud_process(tmp_path / "cloud.log", planner="rule", env=env) as (url, proc):
        host, port = url.removeprefix("http://").split(":")
        stuck = socket.create_connection((host, int(port)), timeout=30)
        stuck.sendall(f"POST /plan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Length: 500\r\n\r\n{".encode())  # fmt: skip
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=3 + 20)
        assert time.monotonic() - start < 3 + 20
        stuck.close()
    log = (tmp_path / "cloud.log").read_text()
    assert "Traceback" not in log, log
    assert '"GET /health" 200' in log, "one access-log line per request"


@pytest.mark.slow
def test_language_model_planning_is_admitted_up_to_its_slots_then_503(settings, ready):
    """One slot, no queue: of four simultaneous language-model plans some are refused at once with 503 and
    Retry-After, the admitted ones are answered, and /health answers meanwhile."""
    cloud = build_cloud(settings, ready, EncoderShelf(settings.models_dir, ready.dataset), "llm")
    app = create_app(cloud, "ml-100k", token=TOKEN, limits=ServiceLimits(plan_slots=1, plan_queue=0))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.1)
        warm = post(url, "plan", {"abstract": ABSTRACT}, AUTH, timeout=300)  # loads the model once
        assert warm.status_code == 200 and warm.json()["status"] != "rule"
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(post, url, "plan", {"abstract": {**ABSTRACT, "sanitized_query": f"comedy {n}"}},
                                   AUTH, 300) for n in range(4)]  # fmt: skip
            time.sleep(0.3)
            health = httpx.get(f"{url}/health", timeout=10)
            replies = [f.result() for f in futures]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    codes = sorted(r.status_code for r in replies)
    assert 200 in codes and 503 in codes, codes
    refused = next(r for r in replies if r.status_code == 503)
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["dependency"] == "planner"
    assert health.status_code == 200 and health.json()["planning"]["slots"] == 1
    assert health.json()["dependencies"]["planner"]["kind"] == "llm"


def test_planner_model_down_falls_back_to_rules_and_health_says_so(settings, ready, tmp_path):
    """The cloud's language model unreachable (an Ollama backend on a closed port): in process and over HTTP
    the plan comes from the rules with the failure recorded and shown, and /health reports the planner down."""
    cloud = build_cloud(settings, ready, EncoderShelf(settings.models_dir, ready.dataset), "rule")
    down = settings.model_copy(update={"llm_backend": "ollama", "ollama_host": f"http://127.0.0.1:{free_port()}"})
    cloud.planner_model = chat_model(down, "cloud", timeout_s=5)
    device = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "d.db"),
                                  progress=False).with_cloud(cloud)  # fmt: skip
    state = recommend(device, "196", "a funny animated movie", allow_rerequest=False)
    assert state["source"] == "cloud" and state["plan_result"].status == "fallback"
    assert any("planner model failed" in w for w in state["warnings"]), state["warnings"]

    app = create_app(cloud, "ml-100k", token=TOKEN)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        plan = post(url, "plan", {"abstract": ABSTRACT}, AUTH)
        assert plan.status_code == 200 and plan.json()["status"] == "fallback"
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["dependencies"]["planner"]["ok"] is False
    finally:
        server.should_exit = True
        thread.join(timeout=30)

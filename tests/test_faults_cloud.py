"""Fault injection between the device and the cloud: every bad or slow answer takes a defined route, with a
warning, and nothing of it is cached.

The cloud here is a real loopback HTTP server (`tests.fake_cloud.FakeCloud`) answering with the real cloud
agent's replies, corrupted one way per test; the device is a real runtime talking to it over `HttpTransport`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest

from agents.device.replies import UntrustedReplyError
from graph.boundary import Boundary, CloudRefusedError, HttpTransport, InProcessTransport, cloud_handlers
from graph.run import recommend
from graph.runtime import TandemRuntime
from ground.errors import TandemError
from ground.settings import Settings
from tests.chroma_server import chroma_process, free_port
from tests.cloud_service import cloud_process
from tests.fake_cloud import FakeCloud
from tools.chord import ChordConfig, train_chord
from tools.device_store import CachedSemantics, DeviceStore, query_key
from tools.protocol import Plan, PlanResult
from tools.quant import DeviceResources
from tools.workspace import Workspace

USER = "196"
QUERY = "a funny animated movie"
OTHER_QUERY = "a tense thriller with a twist"
DEADLINE = 30.0
SEMANTIC_FAULTS = ["wrong_dim", "ids_out_of_range", "short_scores", "nan_scores", "duplicate_ids", "error_500",
                   "garbage_json"]  # fmt: skip


@pytest.fixture(scope="module")
def cloud_side(settings, ready) -> TandemRuntime:
    """An in-process rule-planner runtime: its cloud agent backs the fake cloud, its device is reused. One
    request warms it (the text encoder loads on first use), so the deadlines below measure the faults."""
    rt = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=":memory:", progress=False)
    assert recommend(rt, USER, QUERY, allow_rerequest=False)["source"] == "cloud"
    return rt


@pytest.fixture
def fake(cloud_side):
    num_items = cloud_side.device.catalog.num_items
    with FakeCloud(cloud_handlers(cloud_side.cloud), num_items, trickle_interval=0.5) as cloud:
        yield cloud


def device_for(cloud_side: TandemRuntime, url: str, store_path, deadline: float = DEADLINE) -> TandemRuntime:
    """A device (fresh store) talking to `url` over HTTP under `deadline`, on the JSON wire (1): the fake cloud
    corrupts its lists (the compact wire's refusals are tested in tests/test_wire.py)."""
    device = replace(cloud_side.device, store=DeviceStore(store_path))
    boundary = Boundary(HttpTransport(url, deadline=deadline))
    settings = cloud_side.settings.model_copy(update={"cloud_wire": 1})
    return replace(cloud_side, settings=settings, device=device, boundary=boundary, cloud=None, cloud_url=url)


def cached_e_sem(rt: TandemRuntime) -> list[float] | None:
    entry = rt.device.store.cached(USER)
    return None if entry is None else entry.e_sem


def ask(rt: TandemRuntime, query: str = QUERY):
    return recommend(rt, USER, query, allow_rerequest=False)


@pytest.mark.server
@pytest.mark.parametrize("fault", SEMANTIC_FAULTS)
def test_bad_semantic_answer_without_cache_ranks_on_device_and_caches_nothing(fault, cloud_side, fake, tmp_path):
    rt = device_for(cloud_side, fake.url, tmp_path / "d.sqlite")
    fake.faults["semantic"] = fault
    state = ask(rt)
    assert state["source"] == "device_only" and "device_fallback" in state["route"]
    assert len(state["ranked"]) == 10
    assert any("cloud retrieval failed" in w for w in state["warnings"]), state["warnings"]
    assert rt.device.store.cached(USER) is None, "an invalid answer must never be cached"

    fake.faults.clear()  # the same device against a healthy cloud: nothing was poisoned
    healthy = ask(rt)
    assert healthy["source"] == "cloud" and cached_e_sem(rt) is not None


@pytest.mark.server
@pytest.mark.parametrize("fault", ["wrong_dim", "ids_out_of_range", "short_scores", "nan_scores"])
def test_bad_semantic_answer_with_cache_calibrates_and_keeps_the_good_cache(fault, cloud_side, fake, tmp_path):
    rt = device_for(cloud_side, fake.url, tmp_path / "d.sqlite")
    first = ask(rt)
    assert first["source"] == "cloud"
    before = rt.device.store.cached(USER)
    fake.faults["semantic"] = fault
    state = ask(rt, OTHER_QUERY)  # a new query: the cache is not reliable, so the device asks the cloud
    assert state["source"] == "calibrated_cache" and "device_calibrate" in state["route"]
    assert any("unusable SemanticResponse" in w for w in state["warnings"]), state["warnings"]
    assert rt.device.store.cached(USER) == before, "the good cache must survive an invalid answer untouched"


@pytest.mark.server
def test_plan_with_a_tag_outside_the_catalogue_is_refused(cloud_side, fake, tmp_path):
    rt = device_for(cloud_side, fake.url, tmp_path / "d.sqlite")
    fake.faults["plan"] = "unknown_tag"
    state = ask(rt)
    assert state["source"] == "device_only" and "cloud_semantic" not in state["route"]
    assert any("cloud planning failed" in w and "outside the catalogue" in w for w in state["warnings"])
    assert state["plan_result"].status == "device"
    assert rt.device.store.cached(USER) is None


@pytest.mark.server
@pytest.mark.parametrize("fault", ["trickle_head", "trickle_body"])
def test_trickling_cloud_is_given_up_at_the_deadline(fault, cloud_side, fake, tmp_path):
    rt = device_for(cloud_side, fake.url, tmp_path / "d.sqlite", deadline=2.0)
    fake.faults["plan"] = fault
    start = time.monotonic()
    state = ask(rt)
    elapsed = time.monotonic() - start
    assert state["source"] == "device_only"
    assert any("within the 2 s deadline" in w for w in state["warnings"]), state["warnings"]
    assert elapsed < 2.0 + 15.0, f"the request took {elapsed:.1f} s despite a 2 s deadline"
    assert rt.device.store.cached(USER) is None


@pytest.mark.server
def test_an_answer_larger_than_the_device_reads_is_refused(cloud_side, fake, tmp_path):
    rt = device_for(cloud_side, fake.url, tmp_path / "d.sqlite")
    rt = replace(rt, boundary=Boundary(HttpTransport(fake.url, max_reply_bytes=4096)))
    state = ask(rt)
    assert state["source"] == "device_only"
    assert any("exceeds 4096 bytes" in w for w in state["warnings"]), state["warnings"]
    assert rt.device.store.cached(USER) is None


@pytest.mark.server
def test_a_cloud_older_than_the_compact_wire_is_asked_again_on_wire_1(cloud_side, fake, tmp_path):
    rt = device_for(cloud_side, fake.url, tmp_path / "d.sqlite")
    rt = replace(rt, settings=rt.settings.model_copy(update={"cloud_wire": 2}))
    fake.faults["semantic"] = "before_wire_2"
    state = ask(rt)
    assert state["source"] == "cloud", state["warnings"]
    assert any("older than the compact wire" in w for w in state["warnings"]), state["warnings"]
    asked = [body.get("wire") for route, body in fake.payloads if route == "semantic"]
    assert asked == [2, None], "one try on wire 2, then wire 1 (sent as no field, as an old device)"
    again = ask(rt, OTHER_QUERY)  # the session stays on wire 1: no second refusal, no second warning
    assert again["source"] == "cloud" and not any("compact wire" in w for w in again["warnings"])
    assert [body.get("wire") for route, body in fake.payloads if route == "semantic"] == [2, None, None]
    fresh = replace(device_for(cloud_side, fake.url, tmp_path / "e.sqlite"), wire_downgraded=False)
    fresh = replace(fresh, settings=fresh.settings.model_copy(update={"cloud_wire": 2}))
    fake.faults["semantic"] = "error_500"  # any other refusal is not a reason to change wire
    assert ask(fresh)["source"] == "device_only" and not fresh.wire_downgraded


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1:21", "http://", "127.0.0.1:8765"])
def test_a_cloud_url_that_is_not_http_is_one_clear_error(url):
    with pytest.raises(TandemError, match="is not an http"):
        HttpTransport(url)


@pytest.mark.server
def test_connection_refused_takes_the_fallback(cloud_side, tmp_path):
    rt = device_for(cloud_side, f"http://127.0.0.1:{free_port()}", tmp_path / "d.sqlite")
    state = ask(rt)
    assert state["source"] == "device_only"
    assert any("unreachable" in w and "ConnectError" in w for w in state["warnings"]), state["warnings"]
    assert rt.device.store.cached(USER) is None


def test_in_process_cloud_stuck_past_the_deadline_is_given_up(cloud_side, tmp_path):
    handlers = cloud_handlers(cloud_side.cloud)

    def stuck(payload: bytes) -> bytes:
        time.sleep(5.0)
        return handlers["semantic"](payload)

    transport = InProcessTransport({**handlers, "semantic": stuck}, deadline=1.0)
    rt = replace(cloud_side, device=replace(cloud_side.device, store=DeviceStore(tmp_path / "d.sqlite")),
                 boundary=Boundary(transport))  # fmt: skip
    start = time.monotonic()
    state = ask(rt)
    assert time.monotonic() - start < 5.0, "the in-process call must be given up at its 1 s deadline"
    assert state["source"] == "device_only"
    assert any("within the 1 s deadline" in w for w in state["warnings"])
    assert rt.device.store.cached(USER) is None


def test_in_process_cloud_crashing_takes_the_fallback(cloud_side, tmp_path):
    def broken(payload: bytes) -> bytes:
        raise RuntimeError("disk on fire")

    transport = InProcessTransport({**cloud_side.boundary.transport.handlers, "semantic": broken})
    rt = replace(cloud_side, device=replace(cloud_side.device, store=DeviceStore(tmp_path / "d.sqlite")),
                 boundary=Boundary(transport))  # fmt: skip
    state = ask(rt)
    assert state["source"] == "device_only"
    assert any("RuntimeError" in w for w in state["warnings"])


def test_a_poisoned_cache_from_an_older_version_is_ignored_not_fatal(cloud_side, tmp_path):
    """A store written before the checks existed may hold a wrong-length e_sem: ignored, said, then replaced."""
    rt = replace(cloud_side, device=replace(cloud_side.device, store=DeviceStore(tmp_path / "d.sqlite")))
    first = ask(rt)
    plan = first["plan_result"].plan.model_dump()
    rt.device.store.store(USER, CachedSemantics(e_sem=[0.5] * 7, candidates=[1, 2, 3], candidate_scores=[0.1] * 3,
                                                history_len=10, plan=plan, query_key=query_key(QUERY)))  # fmt: skip
    state = ask(rt)
    assert state["source"] == "cloud"
    assert any("ignored the cached cloud semantics" in w and "7 dimensions" in w for w in state["warnings"])
    assert len(cached_e_sem(rt)) == rt.device.item_table.shape[1], "the next valid answer replaces the poison"

    rt.device.store.store(USER, CachedSemantics(e_sem=[0.5] * 7, candidates=[1], candidate_scores=[0.1],
                                                history_len=10, plan=plan, query_key=query_key(QUERY)))  # fmt: skip
    down = replace(rt, boundary=Boundary(HttpTransport(f"http://127.0.0.1:{free_port()}")))
    offline = ask(down)
    assert offline["source"] == "device_only", "a poisoned cache is no cache, even with the cloud down"


def test_remember_refuses_what_the_checks_refuse(cloud_side, tmp_path):
    device = replace(cloud_side.device, store=DeviceStore(tmp_path / "d.sqlite"))
    plan = cloud_side.device.local_plan(cloud_side.device.abstract(QUERY, [], [], use_model=False).abstract).plan
    dim = device.item_table.shape[1]
    with pytest.raises(UntrustedReplyError):
        device.remember(USER, QUERY, 3, [0.0] * (dim + 1), [1, 2], [0.1, 0.2], plan)
    with pytest.raises(UntrustedReplyError):
        device.remember(USER, QUERY, 3, [0.0] * dim, [1, 2], [0.1, float("nan")], plan)
    assert device.store.cached(USER) is None
    device.remember(USER, QUERY, 3, list(np.zeros(dim)), [1, 2], [0.1, 0.2], plan)
    assert device.store.cached(USER) is not None


@pytest.mark.server
def test_chroma_killed_mid_session_takes_the_cloud_down_route_in_process_and_over_http(settings, ready, tmp_path):
    """`TANDEM_CHROMA_URL` set, `chroma run` stopped mid-session: the in-process device and an HTTP device both
    rank from their calibrated cache with a warning naming Chroma; the service answers 503 naming it, and
    /health reports it down."""
    with chroma_process(tmp_path / "chroma") as (chroma_url, chroma):
        served = Settings(home=settings.home, chroma_url=chroma_url)
        ws = Workspace(served, "ml-100k", progress=False)
        ws.index_for_build().build(ws.dataset.catalog, ws.semantics)
        local = TandemRuntime.create(served, "ml-100k", planner="rule", store_path=str(tmp_path / "a.db"),
                                     progress=False)  # fmt: skip
        env = {"TANDEM_HOME": str(settings.home), "TANDEM_CHROMA_URL": chroma_url}
        with cloud_process(tmp_path / "cloud.log", planner="rule", env=env) as (cloud_url, _):
            remote = TandemRuntime.create(settings, "ml-100k", planner="rule", cloud_url=cloud_url,
                                          store_path=str(tmp_path / "b.db"), progress=False)  # fmt: skip
            assert ask(local)["source"] == "cloud" and ask(remote)["source"] == "cloud"
            assert httpx.get(f"{cloud_url}/health", timeout=10).json()["dependencies"]["chroma"]["ok"] is True

            chroma.kill()
            chroma.wait(timeout=30)

            in_process = ask(local, OTHER_QUERY)
            assert in_process["source"] == "calibrated_cache", in_process["warnings"]
            assert any("cloud dependency chroma failed" in w for w in in_process["warnings"]), in_process["warnings"]
            over_http = ask(remote, OTHER_QUERY)
            assert over_http["source"] == "calibrated_cache", over_http["warnings"]
            assert any("503" in w and "Chroma" in w for w in over_http["warnings"]), over_http["warnings"]

            plan = over_http["plan_result"].plan.model_dump()
            body = {"abstract": over_http["abstract"].model_dump(), "plan": plan}
            reply = httpx.post(f"{cloud_url}/semantic", json=body, timeout=30)
            assert reply.status_code == 503 and reply.json()["dependency"] == "chroma"
            assert int(reply.headers["retry-after"]) > 0
            health = httpx.get(f"{cloud_url}/health", timeout=10)
            assert health.status_code == 503 and health.json()["dependencies"]["chroma"]["ok"] is False


def test_a_chord_strategy_that_does_not_fit_the_device_encoder_is_refused(settings, ready, tmp_path):
    """CHORD strategies are checked too: another encoder, other layers, a wrong code length or codes that are
    not base64 -> the device runs at full precision and says why; a genuine strategy is applied."""
    rt = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "d.db"), progress=False)
    chord = train_chord(rt.device.encoders.get("SASRec"), rt.workspace.splits.train,
                        ChordConfig(steps=2, batch_size=8, seed=0, threads=1)).chord  # fmt: skip
    rt.device.encoders.put_chord("SASRec", chord)
    rt.device.precision, rt.device.resources = "chord", DeviceResources(max_avg_bits=4.0)
    rule_plan = rt.cloud.plan
    rt.cloud.plan = lambda abstract: PlanResult(plan=Plan.model_validate(
        {**rule_plan(abstract).plan.model_dump(), "encoder": "SASRec", "beta": 0.5}), status="parsed")  # fmt: skip
    handlers = cloud_handlers(rt.cloud)
    corruptions = {
        "encoder": lambda s: {**s, "encoder": "caser"},
        "layers": lambda s: {**s, "layers": s["layers"][:-1], "channels": s["channels"][:-1]},
        "length": lambda s: {**s, "codes": "AAAA" + s["codes"]},
        "base64": lambda s: {**s, "codes": "!!" + s["codes"][2:]},
        "none": lambda s: s,
    }
    for name, corrupt in corruptions.items():

        def strategy(payload: bytes, corrupt=corrupt) -> bytes:
            return json.dumps(corrupt(json.loads(handlers["strategy"](payload)))).encode()

        run = replace(rt, boundary=Boundary(InProcessTransport({**handlers, "strategy": strategy})))
        state = recommend(run, USER, QUERY, allow_rerequest=False, use_cache=False)
        if name == "none":
            assert state["precision"].mode == "chord", state["warnings"]
        else:
            assert state["precision"].mode == "full", (name, state["warnings"])
            assert any("no precision strategy" in w and "unusable ChordStrategy" in w for w in state["warnings"]), (
                name, state["warnings"])  # fmt: skip
        assert len(state["ranked"]) == 10


def test_a_refused_field_is_read_from_either_validation_answer():
    tandem = CloudRefusedError("422", 422, "invalid message: 1 error(s), first at wire")
    fastapi = CloudRefusedError("422", 422, [{"type": "extra_forbidden", "loc": ["body", "wire"], "msg": "x"}])
    assert tandem.refuses_field("wire") and fastapi.refuses_field("wire")
    assert not CloudRefusedError("422", 422, "invalid message: 2 error(s), first at wire").refuses_field("wire")
    assert not CloudRefusedError("422", 422, "invalid message: 1 error(s), first at plan.tags").refuses_field("wire")
    assert not CloudRefusedError("500", 500, "invalid message: 1 error(s), first at wire").refuses_field("wire")
    assert not CloudRefusedError("422", 422, [{"type": "missing", "loc": ["body", "wire"]}]).refuses_field("wire")

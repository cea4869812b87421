"""The compiled graph through every conditional branch, with real encoders, real Chroma and SQLite.

The planner is the rule planner here (fast, deterministic) except where a test swaps in a fixed plan to
force a branch; the language-model planner runs in the agents' own tests and in the slow test below.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from graph.boundary import Boundary, CloudUnavailableError
from graph.builder import builder
from graph.run import recommend, sqlite_checkpointer
from graph.runtime import TandemRuntime
from ground.errors import TandemError
from tools.chord import ChordConfig, train_chord
from tools.protocol import Plan, PlanResult
from tools.quant import DeviceResources
from tools.tag_index import ChromaUnavailableError, ExactTagIndex, TagIndex

USER = "196"
ROOT = Path(__file__).resolve().parent.parent


class DownTransport:
    """A cloud that never answers."""

    def send(self, route: str, payload: bytes) -> bytes:
        raise CloudUnavailableError("connection refused (test)")


class GarbageTransport:
    def send(self, route: str, payload: bytes) -> bytes:
        return b'{"not": "a plan"}'


@pytest.fixture
def runtime(settings, ready, tmp_path) -> TandemRuntime:
    """The rule-planner runtime on Chroma (the default backend on ML-100K is exact search: see the test below)."""
    chroma = settings.model_copy(update={"index_backend": "chroma"})
    return TandemRuntime.create(chroma, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))


def test_default_backend_below_the_crossover_is_exact_search_with_chromas_candidates(settings, ready, tmp_path):
    exact = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "exact.sqlite"))
    chroma = TandemRuntime.create(settings.model_copy(update={"index_backend": "chroma"}), "ml-100k",
                                  planner="rule", store_path=str(tmp_path / "chroma.sqlite"))  # fmt: skip
    assert isinstance(exact.cloud.index, ExactTagIndex) and isinstance(chroma.cloud.index, TagIndex)
    one = recommend(exact, USER, "space adventure", allow_rerequest=False)
    two = recommend(chroma, USER, "space adventure", allow_rerequest=False)
    assert one["source"] == two["source"] == "cloud"
    assert one["ranked"] == two["ranked"] and len(one["ranked"]) == 10


def force_plan(rt: TandemRuntime, **changes) -> None:
    """Make the cloud answer the rule plan with `changes` applied (e.g. encoder="SURGE")."""
    original = rt.cloud.plan

    def planner(abstract):
        plan = Plan.model_validate({**original(abstract).plan.model_dump(), **changes})
        return PlanResult(plan=plan, status="parsed")

    rt.cloud.plan = planner


def history(rt: TandemRuntime) -> list[int]:
    return rt.device.store.history(USER)[0].tolist()


def test_fresh_request_goes_to_the_cloud(runtime):
    state = recommend(runtime, USER, "a funny animated movie", allow_rerequest=False)
    assert state["source"] == "cloud"
    first = ["device_history", "device_cache_check", "device_abstract", "cloud_plan", "cloud_semantic"]
    assert state["route"][:5] == first
    assert "device_sasrec" in state["route"] or "device_surge" in state["route"]
    assert len(state["ranked"]) == 10 and len(set(state["ranked"])) == 10
    assert not set(state["ranked"]) & set(history(runtime)), "seen items must not be recommended"
    assert [c.route for c in state["crossings"]] == ["plan", "semantic"]
    assert all(c.bytes_up > 0 and c.bytes_down > 0 for c in state["crossings"])
    assert runtime.device.cached(USER) is not None


def test_reliable_cache_skips_the_cloud_then_new_history_makes_it_stale(runtime):
    first = recommend(runtime, USER, "a funny animated movie", allow_rerequest=False)
    again = recommend(runtime, USER, "a funny animated movie", allow_rerequest=False)
    assert again["source"] == "cache" and "cloud_plan" not in again["route"] and not again["crossings"]
    assert again["cache"].reliable and again["cache"].new_interactions == 0
    assert again["ranked"] == first["ranked"]
    # the user now watches a dozen documentaries: the cached "funny animated" semantics are stale
    docs = runtime.device.catalog.tag_members("Documentary")[:12].tolist()
    runtime.device.store.append(USER, docs)
    stale = recommend(runtime, USER, "a funny animated movie", allow_rerequest=False)
    assert stale["cache"].present and not stale["cache"].reliable
    assert stale["source"] == "cloud" and "cloud_plan" in stale["route"]


def test_new_query_is_not_answered_from_cache(runtime):
    recommend(runtime, USER, "a funny animated movie", allow_rerequest=False)
    other = recommend(runtime, USER, "a dark film noir", allow_rerequest=False)
    assert other["cache"].reason == "new query" and other["source"] == "cloud"


def test_cloud_down_with_cache_calibrates_on_device(runtime):
    recommend(runtime, USER, "", allow_rerequest=False)
    runtime.device.store.append(USER, runtime.device.catalog.tag_members("Horror")[:15].tolist())
    state = recommend(replace(runtime, boundary=Boundary(DownTransport())), USER, "", allow_rerequest=False)
    assert state["source"] == "calibrated_cache" and "device_calibrate" in state["route"]
    assert any("cloud unreachable" in w for w in state["warnings"])
    assert len(state["ranked"]) == 10
    cached = np.asarray(runtime.device.cached(USER).e_sem)
    e_cal, _ = runtime.device.calibrate(runtime.device.cached(USER), history(runtime))
    assert not np.allclose(cached, e_cal), "calibration must move the cached embedding"


def test_cloud_down_without_cache_ranks_on_device_alone(runtime):
    state = recommend(replace(runtime, boundary=Boundary(DownTransport())), USER, "space adventure",
                      allow_rerequest=False)  # fmt: skip
    assert state["source"] == "device_only" and "device_fallback" in state["route"]
    assert "device_sasrec" in state["route"] and len(state["ranked"]) == 10
    assert any("no cached semantics" in w for w in state["warnings"])


def test_cloud_answering_garbage_takes_the_fallback(runtime):
    state = recommend(replace(runtime, boundary=Boundary(GarbageTransport())), USER, "space adventure",
                      allow_rerequest=False)  # fmt: skip
    assert state["source"] == "device_only" and any("invalid PlanResult" in w for w in state["warnings"])


def test_rerequest_fires_above_threshold(runtime):
    eager = replace(runtime, request_threshold=0.0)  # every disagreement asks the cloud again (once)
    state = recommend(eager, USER, "a funny animated movie")
    assert state["rerequests"] == 1 and state["source"] == "re-request"
    assert state["route"].count("cloud_plan") == 2 and "device_rerequest" in state["route"]
    assert len(state["crossings"]) == 4
    assert recommend(replace(runtime, request_threshold=float("inf")), USER, "a sad drama")["rerequests"] == 0
    assert recommend(replace(runtime, request_threshold=None), USER, "a sad comedy")["rerequests"] == 0


@pytest.mark.parametrize(("encoder", "node"), [("SURGE", "device_surge"), ("none", None)])
def test_plan_chooses_the_structured_branch(runtime, encoder, node):
    force_plan(runtime, encoder=encoder, beta=1.0 if encoder == "none" else 0.5)
    state = recommend(runtime, USER, "a scary movie", allow_rerequest=False)
    structured = [n for n in state["route"] if n in ("device_sasrec", "device_surge")]
    assert structured == ([node] if node else [])
    assert len(state["ranked"]) == 10


def test_unknown_items_and_long_histories_are_handled(runtime):
    given = runtime.workspace.dataset.sequences[0].tolist() * 3 + [99_999]
    state = recommend(runtime, "new-user", "", history=given, allow_rerequest=False)
    assert any("unknown item id" in w for w in state["warnings"])
    assert any("newest 200" in w for w in state["warnings"])
    assert len(state["ranked"]) == 10


def test_new_user_with_empty_history(runtime):
    state = recommend(runtime, "nobody-yet", "a funny animated movie", allow_rerequest=False)
    assert runtime.device.store.history("nobody-yet")[0].tolist() == [] and len(state["ranked"]) == 10
    assert "device_sasrec" not in state["route"] or any("no history" in w for w in state["warnings"])


def test_cloud_nodes_see_only_what_may_cross(runtime):
    """Privacy by construction: the cloud nodes' input schema has abstract and plan only."""
    seen = {}
    for name in ("cloud_plan", "cloud_semantic"):
        seen[name] = set(builder.nodes[name].input_schema.__annotations__)
    assert seen["cloud_plan"] == seen["cloud_semantic"] == {"abstract", "plan_result"}


def test_graph_picture_shows_every_branch():
    mermaid = builder.compile().get_graph().draw_mermaid()
    for name in ("device_use_cache", "device_calibrate", "device_fallback", "device_rerequest", "device_surge"):
        assert name in mermaid


def _use_chord(runtime, chord, max_avg_bits: float = 3.0) -> None:
    runtime.device.encoders.put_chord("SASRec", chord)
    runtime.device.precision = "chord"
    runtime.device.resources = DeviceResources(max_avg_bits=max_avg_bits)
    force_plan(runtime, encoder="SASRec", beta=0.5)


def test_chord_strategy_crosses_the_boundary_and_quantizes_the_device_encoder(runtime):
    """CHORD wired in: profile up, 2-bit-per-channel strategy down, counted; the device runs <= its budget."""
    result = train_chord(runtime.device.encoders.get("SASRec"), runtime.workspace.splits.train,
                         ChordConfig(steps=2, batch_size=8, seed=0, threads=1))  # fmt: skip
    _use_chord(runtime, result.chord, max_avg_bits=3.0)
    state = recommend(runtime, USER, "a scary movie", allow_rerequest=False)
    precision = state["precision"]
    assert precision.mode == "chord" and precision.avg_bits <= 3.0 + 1e-9
    strategy = [c for c in state["crossings"] if c.route == "strategy"]
    assert len(strategy) == 1 and 0 < strategy[0].bytes_down < 2_000
    assert precision.strategy_bits * 16 < 32 * sum(s.channels * s.fan_in for s in result.chord.specs)
    assert len(state["ranked"]) == 10


def test_chord_without_hypernetworks_falls_back_to_full_precision(runtime):
    _use_chord(runtime, None)
    state = recommend(runtime, USER, "a scary movie", allow_rerequest=False)
    assert state["precision"].mode == "full" and any("no CHORD" in w for w in state["warnings"])


def test_chroma_unreachable_in_the_cloud_takes_the_fallback(runtime, monkeypatch):
    def down(*args, **kwargs):
        raise ChromaUnavailableError("Chroma server at http://127.0.0.1:9 is unreachable: ConnectError")

    monkeypatch.setattr(runtime.workspace.index, "retrieve", down)
    state = recommend(runtime, USER, "space adventure", allow_rerequest=False)
    assert state["source"] == "device_only" and len(state["ranked"]) == 10
    assert any("unreachable" in w for w in state["warnings"])


def test_plan_whose_tags_return_nothing_takes_the_fallback(runtime, monkeypatch):
    monkeypatch.setattr(runtime.workspace.index, "retrieve", lambda *args, **kwargs: [])
    state = recommend(runtime, USER, "space adventure", allow_rerequest=False)
    assert state["source"] == "device_only" and any("no candidates" in w for w in state["warnings"])


def test_langgraph_json_graph_builds_its_runtime_from_settings(ready):
    """What LangGraph's own tooling does: load the file named in langgraph.json, run it with plain values only."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    path, name = config["graphs"]["tandem"].split(":")
    spec = importlib.util.spec_from_file_location("langgraph_entry", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = getattr(module, name).invoke({"user": USER, "query": "a funny animated movie", "use_cache": False,
                                        "allow_rerequest": False}, context={"planner": "rule"})  # fmt: skip
    assert len(out["ranked"]) == 10 and out["source"] == "cloud"
    assert "history_items" not in out and "e_str" not in out, "the output schema holds only the answer"
    with pytest.raises(ValidationError, match="runtime_object"):
        getattr(module, name).invoke({"user": USER}, context={"runtime_object": 1})


def test_per_turn_lists_start_afresh_on_a_chat_thread(runtime, tmp_path):
    chat = builder.compile(checkpointer=sqlite_checkpointer(tmp_path / "sessions.sqlite"))
    first = recommend(runtime, USER, "a funny animated movie", graph=chat, thread_id="t1", allow_rerequest=False)
    second = recommend(runtime, USER, "a funny animated movie", graph=chat, thread_id="t1", allow_rerequest=False)
    assert first["route"][0] == second["route"][0] == "device_history"
    assert second["source"] == "cache" and not second["crossings"] and len(first["crossings"]) == 2
    assert len(second["timings"]) == len(second["route"])


@pytest.mark.parametrize(
    ("user", "query", "top_k", "message"),
    [("196", "x" * 10_001, 10, "query"), ("196", "ok", 0, "top_k"), ("", "ok", 10, "user")],
)
def test_bad_requests_are_refused_by_every_entry_point(runtime, user, query, top_k, message):
    with pytest.raises(TandemError, match=f"bad request: {message}"):
        recommend(runtime, user, query, top_k=top_k)
    with pytest.raises(TandemError, match=f"bad request: {message}"):  # straight into the graph, as LangGraph's API
        builder.compile().invoke({"user": user, "query": query, "top_k": top_k}, context={"runtime": runtime})

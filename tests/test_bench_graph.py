"""`evals.bench_graph`'s compute floor: the torch steps a request cannot skip, and LangGraph's own cost of the route."""

from __future__ import annotations

import numpy as np

from evals import bench_graph
from graph.runtime import TandemRuntime


def test_the_empty_route_is_timed_over_every_repeat() -> None:
    stats = bench_graph.empty_route_ms(repeats=20)
    assert stats["n"] == 20 and 0.0 < stats["p50_ms"] <= stats["p95_ms"]


def test_the_floor_times_both_torch_steps_for_each_user_and_encodes_afresh(settings, ready, tmp_path, monkeypatch):
    rt = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    space, texts_seen = rt.cloud.space, []
    real = space.encode_afresh

    def counted(texts: list[str]):
        texts_seen.append(list(texts))
        return real(texts)

    monkeypatch.setattr(space, "encode_afresh", counted)
    users = rt.workspace.splits.test[:3]
    floor = bench_graph.compute_floor(rt, users + users[:1])  # a repeated user is encoded again, not memoised
    assert len(texts_seen) == 4 and texts_seen[0] == texts_seen[3] and all(texts_seen)
    for part in ("eq2_text_encoding", "eq4_sasrec", "sum"):
        assert floor[part]["n"] == 4 and floor[part]["p50_ms"] > 0.0
    assert floor["sum"]["p50_ms"] >= max(floor["eq2_text_encoding"]["p50_ms"], floor["eq4_sasrec"]["p50_ms"]) - 1e-9
    assert floor["text_precision"] == space.precision
    assert np.isfinite(floor["langgraph_empty_route"]["p50_ms"])

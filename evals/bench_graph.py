"""Benchmark of one request through the graph: per-node latency, boundary bytes, end-to-end latency.

Protocol: seeded test-split users of the data set (their leave-one-out history and generated query). For
each user the request runs three ways, each in a fresh device store:
- full path, language models: abstract (device SLM) -> plan (cloud LLM) -> semantic + retrieval ->
  structured -> rank; the embedded Gemma 3 270M plays both models (`--llm-users` users, slow);
- full path, rule planner: the same graph without language models (`--users` users);
- cached path: the same request again, answered from the SCaLRec cache (no cloud call, no language model);
- compute floor: for the same users, the two torch steps a request cannot skip, timed alone on the inference
  thread back to back as the graph runs them (Eq. 2's text encoding of the abstract's query and summary, and
  Eq. 4's SASRec encoding of the history): no request on these cores can be faster than their sum; beside them,
  LangGraph's own cost for the rule path's 7 steps (the same route, fan-out and deferred join with empty nodes);
- CHORD path (`--chord-seconds` > 0): CHORD's profiler + hypernetworks are trained for that many seconds
  against the device SASRec, then the rule-planner path runs with `device_precision = chord`, so the
  profile goes up and the 2-bit-per-channel strategy comes down through the boundary (CHORD Eq. 4-13).
Writes per-node p50/p95 latency, bytes up/down per request (per route) and end-to-end p50/p95 to
evals/results/graph_<data>.json.

Usage: python -m evals.bench_graph [--data ml-100k] [--users 50] [--llm-users 8] [--chord-seconds 60]
"""

from __future__ import annotations

import argparse
import operator
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated, TypedDict

import numpy as np
import torch
from langgraph.graph import END, START, StateGraph
from rich.console import Console
from rich.progress import track
from rich.table import Table

from evals.digests import model_digests
from graph.run import recommend
from graph.runtime import TandemRuntime
from ground.files import write_json
from ground.settings import Settings
from tools.chord import ChordConfig, train_chord
from tools.inference_thread import dedicate_torch_threads, on_inference_thread

RESULTS = Path(__file__).parent / "results"


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64) * 1000.0
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)), "n": len(values)}


def measure(runtime: TandemRuntime, instances, label: str) -> tuple[dict, dict]:
    nodes: dict[str, list[float]] = defaultdict(list)
    end_to_end, cached, up, down = [], [], [], []
    routes: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"up": [], "down": []})
    for inst in track(instances, description=f"{label}: {len(instances)} users"):
        user = f"bench-{inst.user}"
        runtime.device.store.reset(user)
        args = {"history": inst.history.tolist(), "history_ts": inst.history_ts.tolist(), "allow_rerequest": False}
        start = time.perf_counter()
        state = recommend(runtime, user, inst.query, **args)
        end_to_end.append(time.perf_counter() - start)
        for timing in state["timings"]:
            nodes[timing["node"]].append(timing["seconds"])
        up.append(sum(c.bytes_up for c in state["crossings"]))
        down.append(sum(c.bytes_down for c in state["crossings"]))
        for crossing in state["crossings"]:
            routes[crossing.route]["up"].append(crossing.bytes_up)
            routes[crossing.route]["down"].append(crossing.bytes_down)
        start = time.perf_counter()
        again = recommend(runtime, user, inst.query, **args)
        cached.append(time.perf_counter() - start)
        assert again["source"] == "cache", again["route"]
    full = {
        "end_to_end": _stats(end_to_end),
        "nodes": {name: _stats(values) for name, values in nodes.items()},
        "bytes_up_per_request": float(np.mean(up)),
        "bytes_down_per_request": float(np.mean(down)),
        "bytes_per_route": {r: {"up": float(np.mean(v["up"])), "down": float(np.mean(v["down"]))}
                            for r, v in routes.items()},
    }
    return full, _stats(cached)


def compute_floor(runtime: TandemRuntime, instances) -> dict:
    """Per user: Eq. 2's text encoding of the abstract's texts (afresh, the memo bypassed) and Eq. 4's e_str, each
    timed on the inference thread, and their sum: the torch work one request needs on these cores."""
    space, encoder = runtime.cloud.space, runtime.device.encoders.get("SASRec")
    text, structured = [], []
    for inst in track(instances, description=f"compute floor: {len(instances)} users"):
        abstract = runtime.device.abstract(inst.query, inst.history.tolist(), inst.history_ts.tolist()).abstract
        texts = [t for t in (abstract.sanitized_query.strip(), abstract.behavior_summary.strip()) if t]
        start = time.perf_counter()
        on_inference_thread(space.encode_afresh, texts)
        text.append(time.perf_counter() - start)
        history = np.asarray(inst.history, dtype=np.int64)  # the encoder reads its newest max_len, as in the graph
        start = time.perf_counter()
        on_inference_thread(encoder.encode, [history])
        structured.append(time.perf_counter() - start)
    both = [a + b for a, b in zip(text, structured, strict=True)]
    return {"eq2_text_encoding": _stats(text), "eq4_sasrec": _stats(structured), "sum": _stats(both),
            "langgraph_empty_route": empty_route_ms(), "text_precision": space.precision}


def empty_route_ms(repeats: int = 300) -> dict[str, float]:
    """LangGraph alone: the rule path's route (history, cache check, abstract, plan, semantic + SASRec in parallel,
    deferred rank) with nodes that do nothing, invoked `repeats` times after a warm-up."""
    class Route(TypedDict, total=False):
        route: Annotated[list, operator.add]

    def step(name: str):
        return lambda state: {"route": [name]}

    builder = StateGraph(Route)
    for name in ("history", "cache_check", "abstract", "plan", "semantic", "sasrec"):
        builder.add_node(name, step(name))
    builder.add_node("rank", step("rank"), defer=True)
    builder.add_edge(START, "history")
    for a, b in (("history", "cache_check"), ("cache_check", "abstract"), ("abstract", "plan"), ("semantic", "rank"),
                 ("sasrec", "rank"), ("rank", END)):  # fmt: skip
        builder.add_edge(a, b)
    builder.add_conditional_edges("plan", lambda state: ["semantic", "sasrec"], ["semantic", "sasrec"])
    route = builder.compile()
    times = []
    for n in range(repeats + 50):
        start = time.perf_counter()
        route.invoke({"route": []})
        if n >= 50:
            times.append(time.perf_counter() - start)
    return _stats(times)


def measure_chord(instances, seconds: float, settings: Settings, data: str, store: str) -> dict:
    """The rule-planner path with CHORD's per-user mixed precision (hypernetworks trained for `seconds`)."""
    chord_settings = settings.model_copy(update={"device_precision": "chord"})
    runtime = TandemRuntime.create(chord_settings, data, planner="rule", store_path=store)
    config = ChordConfig(steps=100_000, time_budget_s=seconds, seed=settings.seed)
    # trained on the inference thread, whose team has the cores, then every other thread is set back to one, so
    # the measured requests meet no second OpenMP team (`tools.inference_thread.dedicate_torch_threads`)
    trained = on_inference_thread(train_chord, runtime.device.encoders.get("SASRec"), runtime.workspace.splits.train,
                                  config)  # fmt: skip
    dedicate_torch_threads()
    runtime.device.encoders.put_chord("SASRec", trained.chord)
    full, _ = measure(runtime, instances, "CHORD precision")
    full["chord_training"] = {"steps": trained.steps, "seconds": trained.seconds}
    return full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--llm-users", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chord-seconds", type=float, default=60.0)
    parser.add_argument("--out", default="", help="results file (default evals/results/graph_<data>.json)")
    args = parser.parse_args()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "device.sqlite")
        rule = TandemRuntime.create(settings, args.data, planner="rule", store_path=store)
        rng = np.random.default_rng(args.seed)
        test = rule.workspace.splits.test
        picked = [test[i] for i in rng.choice(len(test), size=min(args.users, len(test)), replace=False)]
        load_before = os.getloadavg()
        rule_full, rule_cached = measure(rule, picked, "rule planner")
        floor = compute_floor(rule, picked)
        llm_full, llm_cached = None, None
        if args.llm_users > 0:
            llm = TandemRuntime.create(settings, args.data, planner="llm", store_path=store)
            llm_full, llm_cached = measure(llm, picked[: args.llm_users], "language models")
        chord_full = None
        if args.chord_seconds > 0:
            chord_full = measure_chord(picked, args.chord_seconds, settings, args.data, store)
    result = {
        "data": args.data,
        "protocol": "seeded test-split users, leave-one-out history + generated query, fresh device store each",
        "machine": f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads, CPU only; embedded Gemma 3 "
        "270M Q4_K_M via llama.cpp for both agents",
        "text_precision": rule.cloud.space.precision if rule.cloud is not None else None,
        "load_avg_before_after": [load_before, os.getloadavg()],
        "digests": model_digests(settings, rule.workspace, rule.device, with_language_models=args.llm_users > 0),
        "full_path_llm": llm_full,
        "full_path_rule_planner": rule_full,
        "cached_path": {"after_llm_request": llm_cached, "after_rule_request": rule_cached},
        "chord_path_rule_planner": chord_full,
        "compute_floor": floor,
    }
    out = Path(args.out) if args.out else RESULTS / f"graph_{args.data}.json"
    write_json(out, result)
    table = Table(title=f"graph latency ({args.data})")
    for column in ("path", "node", "p50 ms", "p95 ms"):
        table.add_column(column)
    for label, full in (("LLM", llm_full), ("rule", rule_full), ("CHORD", chord_full)):
        if full is None:
            continue
        table.add_row(label, "end to end", f"{full['end_to_end']['p50_ms']:.0f}", f"{full['end_to_end']['p95_ms']:.0f}")
        for name, stats in full["nodes"].items():
            table.add_row("", name, f"{stats['p50_ms']:.1f}", f"{stats['p95_ms']:.1f}")
    table.add_row("cached", "end to end", f"{rule_cached['p50_ms']:.1f}", f"{rule_cached['p95_ms']:.1f}")
    for name, stats in floor.items():
        if isinstance(stats, dict):
            table.add_row("floor", name, f"{stats['p50_ms']:.1f}", f"{stats['p95_ms']:.1f}")
    Console().print(table)
    Console().print(f"bytes per request: {rule_full['bytes_up_per_request']:.0f} up, "
                    f"{rule_full['bytes_down_per_request']:.0f} down; written to {out}")  # fmt: skip


if __name__ == "__main__":
    main()

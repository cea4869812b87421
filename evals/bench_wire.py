"""Bytes on the wire per request, wire 1 (JSON lists) against wire 2 (compact), at identical ranks.

Protocol: seeded test-split users of ML-100K and ML-1M (their leave-one-out history and generated query), the
rule-written scrubbed abstract, the rule planner's plan, and the cloud's semantic answer from the default
retrieval backend (`index_backend = auto`), produced by the very handlers the service runs
(`graph.boundary.cloud_handlers`). For each user: the bytes of the /plan answer, of the /semantic answer in
wire 1 and in wire 2, whether the device's expansion of wire 2 gives the same candidates in the same order
with the same scores, and whether the device's rank step (semantic scores alone, seen items masked) ranks the
same top 10. Counts, not times: independent of machine load.

Usage: python -m evals.bench_wire [--users 100]  (also run as the `wire` section of `evals.bench_scale`,
which writes it into evals/results/scale.json)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import TextSpace
from agents.device.abstract import generate_abstract, history_from_ids
from agents.device.replies import expand_compact
from graph.boundary import cloud_handlers
from ground.settings import Settings, get_settings
from tools.fusion import rank_step
from tools.protocol import CompactSemanticResponse, PlanRequest, SemanticRequest, SemanticResponse
from tools.workspace import Workspace


def measure_data(settings: Settings, data: str, users: int, seed: int) -> dict[str, Any]:
    ws = Workspace(settings, data, progress=True)
    catalog, table = ws.dataset.catalog, ws.semantics.table
    cloud = CloudAgent(space=TextSpace(ws.semantics), index=ws.retriever)
    handlers = cloud_handlers(cloud)
    rng = np.random.default_rng(seed)
    test = ws.splits.test
    picked = [test[i] for i in rng.choice(len(test), size=min(users, len(test)), replace=False)]
    plan_down, old_down, new_down, up_old, up_new, candidates = [], [], [], [], [], []
    same_order = same_top10 = 0
    for inst in track(picked, description=f"{data}: wire 1 vs 2 for {len(picked)} users"):
        entries, unknown = history_from_ids(inst.history[-50:], inst.history_ts[-50:], catalog)
        abstract = generate_abstract(inst.query, entries, None, known_tags=catalog.tags(),
                                     unknown_ids=unknown).abstract  # fmt: skip
        plan_raw = handlers["plan"](PlanRequest(abstract=abstract).model_dump_json().encode())
        plan = json.loads(plan_raw)["plan"]
        old_request = SemanticRequest.model_validate({"abstract": abstract.model_dump(), "plan": plan})
        new_request = old_request.model_copy(update={"wire": 2})
        old_raw = handlers["semantic"](old_request.model_dump_json().encode())
        new_raw = handlers["semantic"](new_request.model_dump_json().encode())
        old = SemanticResponse.model_validate_json(old_raw)
        new = expand_compact(CompactSemanticResponse.model_validate_json(new_raw), table)
        same = new.candidates == old.candidates and np.array_equal(new.scores, old.scores)
        same_order += same
        seen = inst.history
        a = rank_step(np.array(old.candidates), np.array(old.scores), 1.0, seen).items[:10]
        b = rank_step(np.array(new.candidates), np.array(new.scores), 1.0, seen).items[:10]
        same_top10 += bool(np.array_equal(a, b))
        plan_down.append(len(plan_raw))
        old_down.append(len(old_raw))
        new_down.append(len(new_raw))
        up_old.append(len(old_request.model_dump_json()))
        up_new.append(len(new_request.model_dump_json()))
        candidates.append(len(old.candidates))
    n = len(picked)
    return {
        "users": n, "items": catalog.num_items, "backend": type(ws.retriever).__name__,
        "candidates_mean": float(np.mean(candidates)),
        "semantic_down_bytes_mean": {"wire1": float(np.mean(old_down)), "wire2": float(np.mean(new_down))},
        "request_down_bytes_mean": {"wire1": float(np.mean(plan_down) + np.mean(old_down)),
                                    "wire2": float(np.mean(plan_down) + np.mean(new_down))},
        "request_down_bytes_max": {"wire1": int(max(p + o for p, o in zip(plan_down, old_down, strict=True))),
                                   "wire2": int(max(p + o for p, o in zip(plan_down, new_down, strict=True)))},
        "semantic_up_bytes_mean": {"wire1": float(np.mean(up_old)), "wire2": float(np.mean(up_new))},
        "identical_candidates_order_and_scores": f"{same_order}/{n}",
        "identical_top10": f"{same_top10}/{n}",
    }  # fmt: skip


def measure_wire(settings: Settings, users: int, seed: int) -> dict[str, Any]:
    return {
        "protocol": "seeded test-split users, rule abstract + rule plan, default backend; bytes of the handlers' "
        "answers (request down = /plan answer + /semantic answer); ranks by the device's rank step on semantic "
        "scores",
        **{data: measure_data(settings, data, users, seed) for data in ("ml-100k", "ml-1m")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    Console().print_json(json.dumps(measure_wire(get_settings(), args.users, args.seed)))


if __name__ == "__main__":
    main()

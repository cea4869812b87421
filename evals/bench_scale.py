"""Scale benchmark: tag retrieval (CDA4Rec Eq. 3) from 3.7k to 1M items, cloud replicas under load, wire bytes.

Sections (each merges its key into evals/results/scale.json, so one can be rerun alone):
- `retrieval`: for real ML-1M (3,706 items) and SYNTHETIC catalogues (`evals.synthetic`, cost only, never
  accuracy) of 100k and 1M items: per backend (exact numpy, Chroma embedded, Chroma server via `chroma run` on
  loopback), the index build time and memory, single-request retrieval p50/p95 for 3, 10 and 20 tags at each
  candidate size (500, 1000, 2000, 5000), the batched cost per request (`retrieve_many`), and recall@N against
  exact search. Queries are users' mean item embeddings (real ML-1M users; synthetic users on synthetic data);
  plans take the user's tags, then popular ones, split evenly (as the rule planner does). Chroma is built only
  up to `--chroma-max-items` / `--server-max-items` (its build runs at about 10^3 memberships/s here: 1M items
  would take ~40 min); sizes above are reported as not measured. The exponent b of p50 ~ items^b is fitted by
  least squares in log-log; the crossover is where Chroma's p50 falls below exact's (measured, or extrapolated
  from the fitted curves and marked so).
- `service`: `tandem cloud serve --data ml-1m --planner rule --workers N` for N in `--workers` on loopback,
  under a bounded closed-loop load (`--concurrency` clients, `--service-requests` plan + semantic exchanges in
  all): throughput, p50/p95 latency of an exchange, errors. The load generator shares the machine's cores.
- `request`: the rule-planner request on ML-1M in process, minus the device encoder, per backend and wire
  (before: Chroma + wire 1; after: exact + wire 2) with Eq. 2's text encoder in float32, and exact + wire 2 with
  it in bf16 where the CPU multiplies bf16 natively (`TANDEM_TEXT_PRECISION`), split into abstract, /plan, Eq. 2's
  text embedding, the rest of /semantic and the device's read + rank step.
- `wire`: bytes down per /semantic answer for seeded ML-100K and ML-1M test users under the rule planner, in
  the JSON wire of protocol version 1 and the compact wire of version 2, and whether the device's ranking is
  identical (the same top-10 from both).

Wall-clock figures depend on machine load (other jobs share the 2 cores): the load average before and after
each section is recorded; ratios (exact vs Chroma, workers vs one) and counts (bytes, recall) are load-robust.

`--sections summary` re-derives the growth exponents and crossovers from the stored retrieval rows.

Usage: python -m evals.bench_scale [--sections retrieval,service,wire,request] [--sizes 3706,100000,1000000]
       [--requests 20] [--chroma-max-items 100000] [--server-max-items 100000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evals.processes import ServerProcess, free_port
from evals.synthetic import generate, plan_for
from ground.files import write_json
from ground.settings import Settings, get_settings
from tools.tag_index import ExactTagIndex, TagGroups, TagIndex, TagRetriever, chroma_client
from tools.text_encoders import native_bf16, resolve_text_precision
from tools.workspace import Workspace

RESULTS = Path(__file__).parent / "results"
REPORTS = Path(__file__).parent / "reports"
OUT = RESULTS / "scale.json"
TAG_COUNTS = (3, 10, 20)
CANDIDATE_SIZES = (500, 1000, 2000, 5000)
console = Console()


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_avg": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)  # fmt: skip


def _ms(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p95_ms": round(float(np.percentile(arr, 95)), 3)}


def _rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -------------------------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """A catalogue (its tag groups and item table), users' query vectors and their preferred tags."""

    name: str
    synthetic: bool
    catalog: TagGroups
    table: np.ndarray  # [V + 1, d]
    semantics: Any  # ItemSemantics: what `TagIndex.build` embeds the tag descriptions with
    queries: np.ndarray  # [R, d]
    preferred: list[list[str]]
    popular: list[str]

    def plan(self, user: int, tag_count: int, size: int) -> dict[str, int]:
        return plan_for(self.preferred[user], self.popular, tag_count, size)


def real_workload(settings: Settings, users: int, seed: int) -> Workload:
    """ML-1M as it is: seeded users, each querying with the mean of their newest 20 items' embeddings."""
    ws = Workspace(settings, "ml-1m", progress=True)
    dataset, table = ws.dataset, ws.semantics.table
    rng = np.random.default_rng(seed)
    picked = rng.choice(dataset.num_users, size=users, replace=False)
    queries, preferred = [], []
    for user in picked:
        history = dataset.sequences[user][-20:]
        queries.append(table[history].mean(axis=0))
        counts = Counter(tag for item in history.tolist() for tag in dataset.catalog[item].tags)
        preferred.append([tag for tag, _ in counts.most_common()])
    catalog = dataset.catalog
    popular = sorted(catalog.tags(), key=lambda t: -len(catalog.tag_members(t)))
    return Workload("ml-1m", False, catalog, table, ws.semantics, np.stack(queries).astype(np.float32), preferred,
                    popular)  # fmt: skip


def synthetic_workload(items: int, base: Any, users: int, seed: int) -> Workload:
    world = generate(items, base, num_users=users, seed=seed)
    return Workload(world.catalog.name, True, world.catalog, world.semantics.table, world.semantics, world.queries(),
                    [list(f) for f in world.favourite_tags], list(world.catalog.tag_names))  # fmt: skip


# -------------------------------------------------------------------------------------------- retrieval


def measure_backend(index: TagRetriever, exact: ExactTagIndex, work: Workload, progress: Progress,
                    label: str) -> dict[str, Any]:  # fmt: skip
    """Single-request p50/p95 and recall@N vs exact for each (tags, size); batched cost at 20 tags x 5000."""
    cells: dict[str, Any] = {}
    task = progress.add_task(f"{work.name} {label}", total=len(TAG_COUNTS) * len(CANDIDATE_SIZES))
    for tag_count in TAG_COUNTS:
        for size in CANDIDATE_SIZES:
            plans = [work.plan(u, tag_count, size) for u in range(len(work.queries))]
            index.retrieve_ids(work.queries[0], plans[0])  # warm (opens collections, pages in the table)
            times, recalls = [], []
            for query, plan in zip(work.queries, plans, strict=True):
                start = time.perf_counter()
                ids, _ = index.retrieve_ids(query, plan)
                times.append(time.perf_counter() - start)
                if index is not exact:
                    want, _ = exact.retrieve_ids(query, plan)
                    recalls.append(len(set(ids.tolist()) & set(want.tolist())) / len(want))
            cell: dict[str, Any] = _ms(times)
            if recalls:
                cell["recall_mean"] = round(float(np.mean(recalls)), 5)
                cell["recall_min"] = round(float(np.min(recalls)), 5)
            cells[f"{tag_count}x{size}"] = cell
            progress.advance(task)
    plans = [work.plan(u, 20, 5000) for u in range(len(work.queries))]
    start = time.perf_counter()
    index.retrieve_many(work.queries, plans)
    batched = (time.perf_counter() - start) / len(plans)
    return {"cells": cells, "batched_20x5000_ms_per_request": round(1000 * batched, 3)}


class ChromaServer(ServerProcess):
    """`chroma run` on a free loopback port with its data in `path` (stopped on exit)."""

    def __init__(self, path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        chroma = Path(sys.executable).with_name("chroma")
        command = [str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(self.port)]
        super().__init__(command, f"{self.url}/api/v2/heartbeat", path.parent / f"chroma-{self.port}.log", "chroma run")
        self.wait(120)


def chroma_backend(work: Workload, exact: ExactTagIndex, server: bool, progress: Progress) -> dict[str, Any]:
    """Build the Chroma index of `work` (embedded or behind `chroma run`) in a fresh folder and measure it."""
    label = "chroma_server" if server else "chroma_embedded"
    folder = Path(tempfile.mkdtemp(prefix=f"tandem-scale-{label}-"))
    proc = ChromaServer(folder / "db") if server else None
    try:
        client = chroma_client(proc.url if proc else None, folder / "db")
        index = TagIndex(client, work.name)
        rss_before = _rss_bytes(proc.proc.pid if proc else "self")
        task = progress.add_task(f"{work.name} {label} build", total=len(work.catalog.tags()) + 1)
        start = time.perf_counter()
        report = index.build(work.catalog, work.semantics,
                             on_progress=lambda tag, done, total: progress.update(task, completed=done))  # fmt: skip
        build_s = time.perf_counter() - start
        rss_after = _rss_bytes(proc.proc.pid if proc else "self")
        result = {
            "build_seconds": round(build_s, 2), "memberships_per_s": round(report.memberships / build_s, 1),
            "disk_bytes": _folder_bytes(folder / "db"),
            ("server_rss_bytes" if proc else "rss_growth_bytes"): rss_after - (0 if proc else rss_before),
            **measure_backend(index, exact, work, progress, label),
        }  # fmt: skip
        return result
    finally:
        if proc:
            proc.stop()
        shutil.rmtree(folder, ignore_errors=True)


def fit_exponent(sizes: list[int], p50s: list[float]) -> dict[str, float] | None:
    """p50 ~ a * items^b by least squares in log-log: {"b": exponent, "a_ms": a} (None below two sizes)."""
    if len(sizes) < 2:
        return None
    b, log_a = np.polyfit(np.log(sizes), np.log(p50s), 1)
    return {"b": round(float(b), 3), "a_ms": float(np.exp(log_a))}


RECALL_FLOOR = 0.95  # a Chroma answer below this recall@N against exact does not count as beating it
ALL_CELLS = "all plan shapes"  # the geometric mean of p50 over every (tags x candidates) cell of the grid


def _cell_p50(backend: dict[str, Any], cell: str, recall_floor: float = 0.0) -> float | None:
    """p50 of `cell` (or the geometric mean over all cells for `ALL_CELLS`), None when the backend's recall there
    falls below `recall_floor` (or it was not measured)."""
    cells = backend.get("cells")
    if not cells:
        return None
    chosen = list(cells.values()) if cell == ALL_CELLS else [cells[cell]]
    if any(c.get("recall_mean", 1.0) < recall_floor for c in chosen):
        return None
    return float(np.exp(np.mean([np.log(c["p50_ms"]) for c in chosen])))


def crossover(rows: dict[str, Any], cell: str) -> dict[str, Any]:
    """The smallest measured size where a Chroma backend's p50 at `cell` beats exact with recall@N >= RECALL_FLOOR,
    else the extrapolation of the fitted curves (exact a_e n^b_e = chroma a_c n^b_c), marked as extrapolated.
    `ALL_CELLS` compares the geometric mean of p50 over every plan shape (what `EXACT_BELOW_ITEMS` follows)."""
    sizes = sorted(int(k) for k in rows)
    for size in sizes:
        backends = rows[str(size)]["backends"]
        chroma = [p for name, b in backends.items()
                  if name != "exact" and (p := _cell_p50(b, cell, RECALL_FLOOR)) is not None]  # fmt: skip
        if chroma and min(chroma) < _cell_p50(backends["exact"], cell):
            return {"items": size, "cell": cell, "how": "measured: the first size where Chroma's p50 beats exact "
                    f"with recall@N >= {RECALL_FLOOR}"}  # fmt: skip
    fits = {name: fit_exponent(*_curve(rows, name, cell, RECALL_FLOOR)) for name in ("exact", "chroma_embedded")}
    e, c = fits["exact"], fits["chroma_embedded"]
    if e and c and e["b"] > c["b"]:
        items = (c["a_ms"] / e["a_ms"]) ** (1.0 / (e["b"] - c["b"]))
        return {"items": int(round(items, -3)), "cell": cell, "how": "extrapolated from the fitted curves "
                "(Chroma never beat exact at a measured size)", "fits": fits}  # fmt: skip
    return {"items": None, "cell": cell, "how": "Chroma never beat exact and its curve does not grow slower",
            "fits": fits}  # fmt: skip


def summarise(rows: dict[str, Any]) -> dict[str, Any]:
    """How p50 grows with catalogue size (fitted exponents) and where Chroma overtakes exact (crossovers)."""
    growth = {}
    for backend in ("exact", "chroma_embedded", "chroma_server"):
        for cell in ("3x500", "20x5000", ALL_CELLS):
            fit = fit_exponent(*_curve(rows, backend, cell))
            if fit:
                growth[f"{backend} {cell}"] = {**fit, "sizes": _curve(rows, backend, cell)[0]}
    cells = ("3x500", "10x500", "10x1000", "20x5000", ALL_CELLS)
    return {"growth": growth, "crossover": {cell: crossover(rows, cell) for cell in cells}}


def _curve(rows: dict[str, Any], backend: str, cell: str, recall_floor: float = 0.0) -> tuple[list[int], list[float]]:
    sizes, p50s = [], []
    for size in sorted(int(k) for k in rows):
        entry = rows[str(size)]["backends"].get(backend, {})
        p50 = _cell_p50(entry, cell, recall_floor) if "cells" in entry else None
        if p50 is not None:
            sizes.append(size)
            p50s.append(p50)
    return sizes, p50s


def run_retrieval(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    base = Workspace(settings, "ml-1m", progress=True).semantics
    with _progress() as progress:
        for size in args.sizes:
            load_before = os.getloadavg()
            start = time.perf_counter()
            if size == 3706:
                work = real_workload(settings, args.requests, args.seed)
            else:
                work = synthetic_workload(size, base, args.requests, args.seed)
            generate_s = time.perf_counter() - start
            start = time.perf_counter()
            exact = ExactTagIndex(work.catalog, work.table)
            exact_build = time.perf_counter() - start
            memberships = sum(len(work.catalog.tag_members(t)) for t in work.catalog.tags())
            backends: dict[str, Any] = {"exact": {
                "build_seconds": round(exact_build, 4),
                "memory_bytes": int(work.table.nbytes + 8 * memberships),
                **measure_backend(exact, exact, work, progress, "exact"),
            }}  # fmt: skip
            for server, limit in ((False, args.chroma_max_items), (True, args.server_max_items)):
                name = "chroma_server" if server else "chroma_embedded"
                if work.catalog.num_items <= limit:
                    backends[name] = chroma_backend(work, exact, server, progress)
                else:
                    backends[name] = {"not_measured": f"build too slow for the budget above {limit} items "
                                      f"(~10^3 memberships/s; {memberships} memberships here)"}  # fmt: skip
            rows[str(size)] = {
                "catalogue": work.name, "synthetic": work.synthetic, "items": work.catalog.num_items,
                "tags": len(work.catalog.tags()), "memberships": memberships, "requests": len(work.queries),
                "generate_seconds": round(generate_s, 2), "load_avg_before": load_before,
                "load_avg_after": os.getloadavg(), "backends": backends,
            }  # fmt: skip
            del work, exact
    return {
        "protocol": "single requests, one after another; p50/p95 over seeded users; recall@N = |Chroma ∩ exact| / "
        "|exact| per request; 'AxB' = A tags x B candidates; SYNTHETIC catalogues measure cost only",
        "machine": machine(), "sizes": rows, **summarise(rows),
    }  # fmt: skip


def plot_retrieval(result: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["sizes"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, cell in zip(axes, ("3x500", "20x5000"), strict=True):
        for backend, style in (("exact", "o-"), ("chroma_embedded", "s--"), ("chroma_server", "^:")):
            sizes, p50s = _curve(rows, backend, cell)
            if sizes:
                fit = result["growth"].get(f"{backend} {cell}")
                label = backend + (f" (b={fit['b']:.2f})" if fit else "")
                ax.plot(sizes, p50s, style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("catalogue items (3.7k real ML-1M; 100k, 1M synthetic)")
        ax.set_title(f"retrieval p50, {cell.replace('x', ' tags x ')} candidates")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("ms per request (p50)")
    fig.tight_layout()
    REPORTS.mkdir(parents=True, exist_ok=True)
    out = REPORTS / "scale_latency.png"
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


# -------------------------------------------------------------------------------------------- service


async def closed_loop(url: str, token: str, bodies: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """`concurrency` clients, each sending plan + semantic exchanges one after another until all are sent."""
    headers = {"authorization": f"Bearer {token}"}
    queue = list(reversed(bodies))
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120, headers=headers) as client:

        async def worker() -> None:
            while queue:
                abstract = queue.pop()
                start = time.perf_counter()
                try:
                    plan = await client.post(f"{url}/plan", json={"abstract": abstract})
                    if plan.status_code != 200:
                        errors.append(f"plan {plan.status_code}")
                        continue
                    sem = await client.post(f"{url}/semantic", json={"abstract": abstract, "plan": plan.json()["plan"]})
                    if sem.status_code != 200:
                        errors.append(f"semantic {sem.status_code}")
                        continue
                    latencies.append(time.perf_counter() - start)
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {"exchanges": len(bodies), "answered": len(latencies), "seconds": round(seconds, 2),
            "throughput_per_s": round(len(latencies) / seconds, 2), **(_ms(latencies) if latencies else {}),
            "errors": len(errors), "error_examples": errors[:5]}  # fmt: skip


def run_service(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from evals.bench_service import Service, abstracts

    bodies = abstracts(settings, args.service_requests, "ml-1m")
    logs = Path(tempfile.mkdtemp(prefix="tandem-bench-scale-"))
    runs = {}
    for workers in args.workers:
        token = secrets.token_urlsafe(24)
        port = free_port()
        console.print(f"service: {workers} worker(s), {args.service_requests} exchanges, {args.concurrency} clients")
        service = Service("rule", token, port, logs / f"workers-{workers}.log", data="ml-1m", workers=workers)
        try:
            service.wait()
            asyncio.run(closed_loop(service.url, token, bodies[: 4 * workers], min(workers, args.concurrency)))  # warm
            load_before = os.getloadavg()
            run = asyncio.run(closed_loop(service.url, token, bodies, args.concurrency))
            runs[str(workers)] = {**run, "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
        finally:
            service.stop()
    one = runs.get("1", {}).get("throughput_per_s")
    for run in runs.values():
        run["speedup_vs_1"] = round(run["throughput_per_s"] / one, 2) if one else None
    return {"protocol": f"tandem cloud serve --data ml-1m --planner rule --workers N on 127.0.0.1; closed loop of "
            f"{args.concurrency} clients, {args.service_requests} plan + semantic exchanges (rule-written abstracts "
            "of seeded ML-1M users); the load generator runs on the same cores", "machine": machine(),
            "workers": runs, "logs": str(logs)}  # fmt: skip


# -------------------------------------------------------------------------------------------- main


def _merge(section: str, value: dict[str, Any]) -> None:
    current = json.loads(OUT.read_text()) if OUT.is_file() else {}
    current[section] = {**value, "command": "python -m evals.bench_scale " + " ".join(sys.argv[1:])}
    write_json(OUT, current)


def _print_retrieval(result: dict[str, Any]) -> None:
    table = Table(title="tag retrieval p50 ms (recall@N vs exact), 20 tags x 5000 / 3 tags x 500")
    for column in ("items", "backend", "build s", "20x5000", "3x500", "batched ms/req"):
        table.add_column(column)
    for size, row in result["sizes"].items():
        for name, b in row["backends"].items():
            if "cells" not in b:
                table.add_row(size, name, "-", "not measured", "", "")
                continue
            big, small = b["cells"]["20x5000"], b["cells"]["3x500"]
            recall = f" ({big['recall_mean']:.4f})" if "recall_mean" in big else ""
            table.add_row(size, name, f"{b['build_seconds']:.1f}", f"{big['p50_ms']:.1f}{recall}",
                          f"{small['p50_ms']:.1f}", f"{b['batched_20x5000_ms_per_request']:.1f}")  # fmt: skip
    console.print(table)
    console.print(f"growth: {json.dumps(result['growth'])}")
    console.print(f"crossover: {json.dumps(result['crossover'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="retrieval,service,wire,request")
    parser.add_argument("--sizes", default="3706,100000,1000000", help="3706 = real ML-1M; others synthetic.")
    parser.add_argument("--requests", type=int, default=20, help="Seeded users (requests) per cell.")
    parser.add_argument("--chroma-max-items", type=int, default=100_000)
    parser.add_argument("--server-max-items", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--service-requests", type=int, default=300)
    parser.add_argument("--wire-users", type=int, default=100)
    parser.add_argument("--request-users", type=int, default=60)
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads of this process (0: torch's "
                        "default); a request section run records it")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    sections = set(args.sections.split(","))
    if not 1 <= args.concurrency <= 256 or not 1 <= args.service_requests <= 5000:
        parser.error("--concurrency must be 1..256 and --service-requests 1..5000 (a bounded loopback load)")
    settings = get_settings()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    steps: dict[str, Callable[[argparse.Namespace, Settings], dict[str, Any]]] = {
        "retrieval": run_retrieval, "service": run_service, "wire": run_wire, "request": run_request}  # fmt: skip
    if "summary" in sections:  # re-derive growth and crossovers from the stored retrieval rows (no measuring)
        current = json.loads(OUT.read_text())
        current["retrieval"].update(summarise(current["retrieval"]["sizes"]))
        current["retrieval"]["summary_command"] = "python -m evals.bench_scale --sections summary"
        write_json(OUT, current)
        _print_retrieval(current["retrieval"])
        console.print(f"plot: {plot_retrieval(current['retrieval'])}")
    for name in ("retrieval", "service", "wire", "request"):
        if name in sections:
            result = steps[name](args, settings)
            threads = f"_torch_threads_{args.torch_threads}" if name == "request" and args.torch_threads else ""
            _merge(name + threads, result)
            if name == "retrieval":
                _print_retrieval(result)
                console.print(f"plot: {plot_retrieval(result)}")
            else:
                console.print_json(json.dumps({k: v for k, v in result.items() if k != "machine"}))
    console.print(f"written to {OUT}")


def run_request(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The rule-planner request on ML-1M without the device's structured encoder: device abstract (rules), the
    cloud's /plan and /semantic handlers (Eq. 2 + Eq. 3 + serialisation), the device reading the answer and its
    rank step; per backend (Chroma embedded as before, exact as the default now) and wire (1 before, 2 now)."""
    from agents.cloud.agent import CloudAgent
    from agents.cloud.semantic import TextSpace
    from agents.device.abstract import generate_abstract, history_from_ids
    from agents.device.replies import expand_compact
    from graph.boundary import cloud_handlers
    from tools.fusion import rank_step
    from tools.protocol import CompactSemanticResponse, PlanRequest, SemanticRequest, SemanticResponse

    ws = Workspace(settings, "ml-1m", progress=True)
    ws.index_for_build().build(ws.dataset.catalog, ws.semantics)
    catalog, table = ws.dataset.catalog, ws.semantics.table
    rng = np.random.default_rng(args.seed)
    test = ws.splits.test
    picked = [test[i] for i in rng.choice(len(test), size=min(args.request_users, len(test)), replace=False)]
    runs: dict[str, Any] = {}
    fast = "bf16" if native_bf16() else resolve_text_precision(settings.text_precision)
    setups = [("before: chroma embedded, wire 1", ws.index, 1, "fp32"),
              ("after: exact, wire 2", ws.retriever, 2, "fp32"), ("chroma embedded, wire 2", ws.index, 2, "fp32"),
              ("exact, wire 1", ws.retriever, 1, "fp32")]  # fmt: skip
    if fast != "fp32":
        setups.append((f"exact, wire 2, text {fast}", ws.retriever, 2, fast))
    load_before = os.getloadavg()
    for label, index, wire, precision in setups:
        cloud = CloudAgent(space=TextSpace(ws.semantics, precision=precision), index=index)  # a fresh text memo
        cloud.space.project(["a warm-up text, loading the encoder at this precision"])
        handlers = cloud_handlers(cloud)
        parts: dict[str, list[float]] = {"abstract": [], "plan": [], "eq2_text_embedding": [],
                                         "semantic_retrieval_and_wire": [], "device_read_rank": [],
                                         "total": []}  # fmt: skip
        for inst in track_users(picked, label):
            t0 = time.perf_counter()
            entries, unknown = history_from_ids(inst.history[-50:], inst.history_ts[-50:], catalog)
            abstract = generate_abstract(inst.query, entries, None, known_tags=catalog.tags(),
                                         unknown_ids=unknown).abstract  # fmt: skip
            t1 = time.perf_counter()
            plan = json.loads(handlers["plan"](PlanRequest(abstract=abstract).model_dump_json().encode()))["plan"]
            t2 = time.perf_counter()
            request = SemanticRequest.model_validate({"abstract": abstract.model_dump(), "plan": plan,
                                                      **({"wire": 2} if wire == 2 else {})})  # fmt: skip
            cloud.semantic_embeddings([request.abstract], [request.plan.alpha])  # Eq. 2's texts, now memoised
            t_embed = time.perf_counter()
            raw = handlers["semantic"](request.model_dump_json().encode())
            t3 = time.perf_counter()
            if wire == 2:
                answer = expand_compact(CompactSemanticResponse.model_validate_json(raw), table)
            else:
                answer = SemanticResponse.model_validate_json(raw)
            rank_step(np.array(answer.candidates), np.array(answer.scores), plan["beta"], inst.history)
            t4 = time.perf_counter()
            spans = (t1 - t0, t2 - t1, t_embed - t2, t3 - t_embed, t4 - t3, t4 - t0)
            for key, value in zip(parts, spans, strict=True):
                parts[key].append(value)
        runs[label] = {key: _ms(values) for key, values in parts.items()}
    import torch

    return {"torch_threads": torch.get_num_threads(),
            "protocol": f"{len(picked)} seeded ML-1M test users, rule planner, in process through the service's "
            "byte handlers; excludes the device's structured encoder (no ML-1M device checkpoints here) and the "
            "graph's own overhead; Eq. 2's text encoder in float32 unless the run says otherwise (bf16 is measured "
            f"where the CPU has native bf16: {native_bf16()})",
            "machine": {**machine(), "load_avg_before": load_before}, "runs": runs}  # fmt: skip


def track_users(users: list[Any], label: str) -> Any:
    from rich.progress import track

    return track(users, description=label, console=console)


def run_wire(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from evals.bench_wire import measure_wire

    return measure_wire(settings, args.wire_users, args.seed)


if __name__ == "__main__":
    main()

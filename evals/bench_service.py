"""Load benchmark of the cloud service (`tandem cloud serve`) on loopback: bounded counts, bounded time.

Protocol: the service runs as its own process on 127.0.0.1 with a bearer token and its default limits
(`cloud_*` settings). Abstracts are the rule-written, scrubbed abstracts of seeded ML-100K users with a
handful of fixed query phrasings (a load test: no accuracy is measured).
- rule phase: `--rule` devices at once (default 200), each POST /plan then POST /semantic with the plan it
  got, against a rule-planner service;
- language-model phase: `--llm` POST /plan at once (default 50) against a language-model-planner service
  (the embedded Gemma 3 270M), which admits `cloud_plan_slots` running + `cloud_plan_queue` waiting and
  refuses the rest at once with 503 + Retry-After (counted as refusals, not errors);
- during each burst, GET /health every 0.25 s.
Each phase reports throughput (answered requests per second of the burst), p50/p95 latency of answered
requests, status counts, how fast refusals (503) came and the Retry-After they named, errors (transport
failures and statuses other than 200/503), /health p50/p95/max latency, and the warm-up request's time.
The machine may be shared: the 1/5/15-minute load averages before and after are recorded.
Writes evals/results/service_load.json.

Usage: python -m evals.bench_service [--rule 200] [--llm 50] [--skip-llm]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from agents.device.abstract import generate_abstract, history_from_ids
from evals.processes import ServerProcess, free_port
from ground.files import write_json
from ground.settings import Settings, get_settings
from tools.workspace import Workspace

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["a funny animated movie", "something scary for tonight", "a classic drama", "", "an action film"]
CLIENT_TIMEOUT = 180.0  # seconds a benchmark client waits for one answer
START_TIMEOUT = 300.0  # seconds the service may take to load


def abstracts(settings: Settings, n: int, data: str = "ml-100k") -> list[dict[str, Any]]:
    """n scrubbed, rule-written abstracts of seeded users of `data` (JSON-ready)."""
    dataset = Workspace(settings, data, progress=False).dataset
    rng = np.random.default_rng(settings.seed)
    users = rng.choice(dataset.num_users, size=min(n, dataset.num_users), replace=False)
    out = []
    for k, user in enumerate(users):
        entries, unknown = history_from_ids(dataset.sequences[user][-50:], dataset.timestamps[user][-50:],
                                            dataset.catalog)  # fmt: skip
        result = generate_abstract(QUERIES[k % len(QUERIES)], entries, None, known_tags=dataset.catalog.tags(),
                                   unknown_ids=unknown)  # fmt: skip
        out.append(result.abstract.model_dump())
    return [out[k % len(out)] for k in range(n)]


class Service(ServerProcess):
    """`tandem cloud serve` from this checkout, as a subprocess on a loopback port."""

    def __init__(self, planner: str, token: str, port: int, log: Path, data: str = "ml-100k",
                 workers: int = 1) -> None:  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        cli = [sys.executable, "-c", "from tandem.cli import main; main()"]
        command = [*cli, "cloud", "serve", "--data", data, "--port", str(port), "--planner", planner,
                   "--workers", str(workers)]  # fmt: skip
        super().__init__(command, f"{self.url}/health", log, "the service", cwd=ROOT,
                         env={**os.environ, "TANDEM_CLOUD_TOKEN": token})  # fmt: skip

    def wait(self, timeout: float = START_TIMEOUT) -> None:
        super().wait(timeout)


def _ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    arr = np.asarray(values) * 1000.0
    p50, p95 = np.percentile(arr, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "max_ms": float(arr.max())}


async def _health_probe(client: httpx.AsyncClient, url: str, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            await client.get(f"{url}/health", timeout=CLIENT_TIMEOUT)
            out.append(time.perf_counter() - start)
        except httpx.HTTPError:
            out.append(float("inf"))
        await asyncio.sleep(0.25)


async def burst(url: str, token: str, bodies: list[dict[str, Any]], semantic: bool) -> dict[str, Any]:
    """All `bodies` at once: /plan (then /semantic with the plan) per body; latency of the whole exchange."""
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=len(bodies) + 8, max_keepalive_connections=len(bodies) + 8)
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    refused: list[float] = []
    retry_after: list[int] = []
    errors: list[str] = []
    health: list[float] = []

    async with httpx.AsyncClient(limits=limits, timeout=CLIENT_TIMEOUT, headers=headers) as client:

        async def one(abstract: dict[str, Any]) -> None:
            start = time.perf_counter()
            try:
                plan = await client.post(f"{url}/plan", json={"abstract": abstract})
                statuses[f"plan {plan.status_code}"] += 1
                final = plan
                if semantic and plan.status_code == 200:
                    final = await client.post(f"{url}/semantic", json={"abstract": abstract,
                                                                       "plan": plan.json()["plan"]})  # fmt: skip
                    statuses[f"semantic {final.status_code}"] += 1
                if final.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                elif final.status_code == 503:
                    refused.append(time.perf_counter() - start)
                    retry_after.append(int(final.headers.get("retry-after", "0")))
                else:
                    errors.append(f"{final.status_code}: {final.text[:100]}")
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)

        stop = asyncio.Event()
        probe = asyncio.create_task(_health_probe(client, url, stop, health))
        start = time.perf_counter()
        await asyncio.gather(*(one(body) for body in bodies))
        seconds = time.perf_counter() - start
        stop.set()
        await probe
    return {
        "requests": len(bodies), "answered": len(latencies), "seconds": seconds,
        "throughput_per_s": len(latencies) / seconds if seconds > 0 else None, "latency": _ms(latencies),
        "statuses": dict(statuses), "errors": len(errors), "error_examples": errors[:5],
        "refused_503": {"count": len(refused), **_ms(refused),
                        "retry_after_s_median": float(np.median(retry_after)) if retry_after else None},
        "health": {"probes": len(health), **_ms([h for h in health if np.isfinite(h)]),
                   "failed": sum(1 for h in health if not np.isfinite(h))},
    }  # fmt: skip


def phase(planner: str, bodies: list[dict[str, Any]], semantic: bool, log: Path) -> dict[str, Any]:
    """One service with `planner`, warmed by one request, then one burst of all `bodies`."""
    token = secrets.token_urlsafe(24)
    service = Service(planner, token, free_port(), log)
    try:
        service.wait()
        warm = asyncio.run(burst(service.url, token, bodies[:1], semantic))  # loads the models once
        if warm["answered"] != 1:
            raise RuntimeError(f"the warm-up request failed: {warm}")
        result = asyncio.run(burst(service.url, token, bodies, semantic))
        result["warm_up_ms"] = warm["latency"]["p50_ms"]
        return result
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", type=int, default=200, help="Concurrent rule-planner requests (plan + semantic).")
    parser.add_argument("--llm", type=int, default=50, help="Concurrent language-model plans.")
    parser.add_argument("--skip-llm", action="store_true", help="Run the rule phase only.")
    args = parser.parse_args()
    if not 1 <= args.rule <= 1000 or not 1 <= args.llm <= 200:
        parser.error("--rule must be 1..1000 and --llm 1..200 (a bounded loopback benchmark)")
    settings = get_settings()
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    bodies = abstracts(settings, max(args.rule, args.llm))
    logs = Path(tempfile.mkdtemp(prefix="tandem-bench-service-"))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before},
        "limits": {"plan_slots": settings.cloud_plan_slots, "plan_queue": settings.cloud_plan_queue,
                   "plan_max_wait_s": settings.cloud_plan_max_wait, "deadline_s": settings.cloud_deadline,
                   "workers": settings.cloud_workers, "max_connections": settings.cloud_max_connections},
        "rule": phase("rule", bodies[: args.rule], True, logs / "rule.log"),
    }  # fmt: skip
    if not args.skip_llm:
        report["llm"] = phase("llm", bodies[: args.llm], False, logs / "llm.log")
    report["machine"]["load_avg_after"] = os.getloadavg()
    write_json(RESULTS / "service_load.json", report)
    for name in ("rule", "llm"):
        if name in report:
            r = report[name]
            print(f"{name}: {r['answered']}/{r['requests']} answered in {r['seconds']:.1f} s, "
                  f"p50 {r['latency']['p50_ms']} ms, p95 {r['latency']['p95_ms']} ms, statuses {r['statuses']}, "
                  f"errors {r['errors']}, /health p50 {r['health']['p50_ms']} ms, max {r['health']['max_ms']} ms")
    print(f"wrote {RESULTS / 'service_load.json'} (service logs in {logs})")


if __name__ == "__main__":
    main()

"""Plan latency per backend and batch throughput: `python -m evals.bench_backends`.

- Plan latency: the same seeded ML-100K abstracts (rules-only abstracts of test users, so every backend
  plans the same input) planned by the cloud role on each backend given: the embedded llama.cpp model, and
  optionally a stock `ChatOllama` (`--ollama-url`) and a stock `ChatOpenAI` (`--openai-url`, `--openai-model`,
  `--openai-structured`) against running servers; p50/p95 latency and the plan status counts.
- Batch throughput: `tandem recommend --users` (one process, `tandem.batch.run_batch`) over seeded test users,
  with the rule planner and with the language-model planner; users per second.
Results (with the machine's load average, which these figures depend on) go to
`evals/results/backends_ml-100k.json`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.language_models import BaseChatModel
from rich.console import Console
from rich.progress import track

from agents.backends import chat_model, describe
from agents.cloud.planner import plan_strategy
from agents.device.abstract import generate_abstract, history_from_ids
from ground.files import write_json
from ground.settings import Settings, StructuredMethod
from tandem.batch import run_batch
from tools.data import leave_one_out, load

OUT = Path("evals/results/backends_ml-100k.json")


def plan_latency(llm: BaseChatModel, method: StructuredMethod, abstracts: list, tags: list[str]) -> dict[str, Any]:
    """Plan every abstract with `llm`; latency percentiles and plan outcomes."""
    seconds, status = [], {"parsed": 0, "repaired": 0, "fallback": 0}
    for abstract in track(abstracts, description=f"plans on {describe(llm)['backend']}", transient=True):
        result = plan_strategy(abstract, tags, llm, method=method)
        status[result.status] = status.get(result.status, 0) + 1
        if result.stats:
            seconds.append(result.stats["latency_s"])
    return {
        **describe(llm), "method": method, "plans": len(abstracts), "status": status,
        "p50_s": round(float(np.percentile(seconds, 50)), 3) if seconds else None,
        "p95_s": round(float(np.percentile(seconds, 95)), 3) if seconds else None,
    }  # fmt: skip


def batch_throughput(settings: Settings, users: list[str], planner: str) -> dict[str, Any]:
    """`run_batch` over `users` with `planner`; users per second, start-up excluded by a warm-up. Each run has a
    new device store, so no request is answered from a semantic cache an earlier run left."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.jsonl"
        path.write_text(json.dumps({"user": users[0]}) + "\n")
        store = str(Path(folder) / "device.sqlite")
        run_batch(settings, "ml-100k", path, io.StringIO(), planner=planner, store_path=store)  # warm the models
        path.write_text("".join(json.dumps({"user": u, "query": "something to watch tonight"}) + "\n" for u in users))
        summary = run_batch(settings, "ml-100k", path, io.StringIO(), planner=planner, store_path=store)
    return {"planner": planner, **summary.model_dump()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=8, help="abstracts planned per backend")
    parser.add_argument("--rule-users", type=int, default=200, help="batch users with the rule planner")
    parser.add_argument("--llm-users", type=int, default=10, help="batch users with the language-model planner")
    parser.add_argument("--ollama-url", default="", help="an Ollama server to plan on (stock ChatOllama)")
    parser.add_argument("--openai-url", default="", help="an OpenAI-compatible base URL (stock ChatOpenAI)")
    parser.add_argument("--openai-model", default="", help="the model name that server answers to")
    parser.add_argument("--openai-structured", default="none", help="structured-output method on that server")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    settings = Settings()
    dataset = load("ml-100k", settings.data_dir)
    tags = dataset.catalog.tags()
    splits = leave_one_out(dataset, seed=settings.seed, max_len=settings.max_seq_len)
    rng = np.random.default_rng(settings.seed)
    picked = sorted(rng.choice(len(splits.test), size=args.plans, replace=False).tolist())
    abstracts = []
    for n in picked:
        inst = splits.test[n]
        history, unknown = history_from_ids(inst.history, inst.history_ts, dataset.catalog)
        query = "something light for a quiet evening"  # the same request for every backend
        abstracts.append(generate_abstract(query, history, None, known_tags=tags, unknown_ids=unknown).abstract)

    backends = [plan_latency(chat_model(settings, "cloud", timeout_s=600), "json_schema", abstracts, tags)]
    if args.ollama_url:
        own = settings.model_copy(update={"cloud_llm_backend": "ollama", "cloud_llm_url": args.ollama_url})
        backends.append(plan_latency(chat_model(own, "cloud", timeout_s=600), "json_schema", abstracts, tags))
    if args.openai_url:
        own = settings.model_copy(update={"cloud_llm_backend": "openai", "cloud_llm_url": args.openai_url,
                                          "cloud_llm_model": args.openai_model})  # fmt: skip
        backends.append(plan_latency(chat_model(own, "cloud", timeout_s=600), args.openai_structured, abstracts, tags))

    users = [dataset.user_names[splits.test[n].user] for n in range(len(splits.test))]
    batches = [batch_throughput(settings, users[: args.rule_users], "rule")]
    if args.llm_users:
        batches.append(batch_throughput(settings, users[: args.llm_users], "llm"))
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m evals.bench_backends " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if v not in ("", None) and k != "out" and (args.openai_url or not k.startswith("openai"))),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "plan_latency": backends,
        "batch": batches,
    }  # fmt: skip
    write_json(args.out, report)
    Console().print_json(json.dumps(report))


if __name__ == "__main__":
    main()

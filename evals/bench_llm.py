"""Benchmark the embedded language model on this machine: `python -m evals.bench_llm`.

For a seeded set of ML-100K test users it runs each language step of CDA4Rec `--calls` times with the
backend from settings (default: embedded llama.cpp, Gemma 3 270M Q4_K_M, 2 threads):
- abstract        (device, Fig. 3 prompt, free text),
- plan_structured (cloud, plan_json prompt, JSON schema enforced by the grammar),
- plan_free       (cloud, plan_json prompt, no grammar: the prompt's raw validity),
- explanation     (device, Fig. 5 prompt, free text),
and writes latency p50, tokens/s and outcome counts (parsed / repaired / fallback, SLM text used or not)
to `evals/results/llm_bench.json`. Steps run one after another, so llama.cpp reuses the KV cache of the
shared prompt prefix between calls of the same step, as a long-running process does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.messages import HumanMessage
from rich.console import Console
from rich.table import Table

from agents.backends import chat_model, generate
from agents.cloud.planner import PLAN_PROMPT, plan_strategy
from agents.device.abstract import ABSTRACT_PROMPT, generate_abstract, history_from_ids
from agents.device.explain import EXPLAIN_PROMPT, generate_explanation
from agents.llm import CallStats
from ground.settings import Settings
from tools.data import Dataset, leave_one_out, load
from tools.data.catalog import Item
from tools.protocol import Plan

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "llm_bench.json"


def summarise(stats: list[CallStats | None]) -> dict[str, Any]:
    """p50/mean latency and tokens/s over the calls that reached the model."""
    done = [s for s in stats if s is not None]
    if not done:
        return {"calls": 0}
    latency = np.array([s.latency_s for s in done])
    tokens = np.array([s.completion_tokens for s in done])
    decode = np.array([s.decode_s or 0.0 for s in done])
    prompt_s = np.array([s.prompt_eval_s or 0.0 for s in done])
    evaluated = np.array([s.prompt_eval_tokens or 0 for s in done])
    return {
        "calls": len(done),
        "latency_p50_s": round(float(np.median(latency)), 3),
        "latency_mean_s": round(float(latency.mean()), 3),
        "tokens_per_s": round(float(tokens.sum() / latency.sum()), 2) if latency.sum() > 0 else 0.0,
        "tokens_per_s_p50": round(float(np.median([s.tokens_per_s for s in done])), 2),
        "decode_tokens_per_s": round(float(tokens.sum() / decode.sum()), 2) if decode.sum() > 0 else None,
        "prompt_eval_tokens_per_s": round(float(evaluated.sum() / prompt_s.sum()), 1) if prompt_s.sum() > 0 else None,
        "prompt_tokens_mean": round(float(np.mean([s.prompt_tokens for s in done])), 1),
        "prompt_tokens_evaluated_mean": round(float(evaluated.mean()), 1),
        "completion_tokens_mean": round(float(tokens.mean()), 1),
        "timeouts": sum(s.timed_out for s in done),
    }


def popular_items(dataset: Dataset, plan: Plan, exclude: set[int], k: int = 5) -> list[Item]:
    """A stand-in final list for the explanation step: the most popular items of the plan's first tags."""
    counts = Counter(int(i) for seq in dataset.sequences for i in seq)
    wanted = set(list(plan.tags)[:2])
    ranked = [dataset.catalog[i] for i, _ in counts.most_common() if i not in exclude]
    return [item for item in ranked if wanted & set(item.tags)][:k] or ranked[:k]


def run(calls: int, out: Path, settings: Settings) -> dict[str, Any]:
    dataset = load("ml-100k", settings.data_dir)
    tags = dataset.catalog.tags()
    splits = leave_one_out(dataset, seed=settings.seed, max_len=settings.max_seq_len)
    rng = np.random.default_rng(settings.seed)
    instances = [splits.test[i] for i in sorted(rng.choice(len(splits.test), size=calls, replace=False))]

    start = time.perf_counter()
    llm = chat_model(settings, "device", timeout_s=180)
    generate(llm, [HumanMessage("Hello")], max_tokens=1)  # load the model once, outside the timings
    load_s = time.perf_counter() - start

    abstracts, abstract_stats, sources, audits = [], [], Counter(), []
    for inst in instances:
        history, unknown = history_from_ids(inst.history, inst.history_ts, dataset.catalog)
        result = generate_abstract(inst.query, history, llm, known_tags=tags, unknown_ids=unknown)
        abstracts.append((result, {h.item_id for h in history}))
        abstract_stats.append(result.stats)
        sources[result.source] += 1
        audits.append(result.audit.score)

    steps: dict[str, Any] = {"abstract": {**summarise(abstract_stats), "slm_text_used": dict(sources),
                                          "leakage_score_mean": round(float(np.mean(audits)), 4)}}  # fmt: skip
    plans: list[Plan] = []
    for name, structured in (("plan_structured", True), ("plan_free", False)):
        stats, status, json_ok, violations = [], Counter(), 0, Counter()
        for result, _ in abstracts:
            planned = plan_strategy(result.abstract, tags, llm, structured=structured)
            stats.append(CallStats.model_validate(planned.stats) if planned.stats else None)
            status[planned.status] += 1
            violations.update(f"{v.field}.{v.code}" for v in planned.violations)
            try:
                json_ok += isinstance(json.loads(planned.raw_text), dict)
            except ValueError:
                pass
            if structured:
                plans.append(planned.plan)
        steps[name] = {**summarise(stats), "status": dict(status), "json_valid": json_ok,
                       "violations": dict(violations.most_common())}  # fmt: skip

    explain_stats, explain_sources = [], Counter()
    for (_, seen), plan in zip(abstracts, plans, strict=True):
        explanation = generate_explanation(plan, popular_items(dataset, plan, seen), llm)
        explain_stats.append(explanation.stats)
        explain_sources[explanation.source] += 1
    steps["explanation"] = {**summarise(explain_stats), "source": dict(explain_sources)}

    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python -m evals.bench_llm --calls {calls}",
        "backend": settings.model_spec("device").label(),
        "model": getattr(llm, "model_name", getattr(llm, "model", "")),
        "n_threads": getattr(llm, "n_threads", None),
        "n_ctx": getattr(llm, "n_ctx", None),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "model_load_s": round(load_s, 2),
        "dataset": "ml-100k",
        "users": [int(inst.user) for inst in instances],
        "query_clarity": dict(Counter(inst.clarity for inst in instances)),
        "prompts": {"abstract": ABSTRACT_PROMPT, "plan": PLAN_PROMPT, "explanation": EXPLAIN_PROMPT},
        "steps": steps,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=8, help="Calls per step (one per sampled user).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Where to write the JSON report.")
    args = parser.parse_args()
    report = run(args.calls, args.out, Settings())

    table = Table("step", "calls", "p50 latency (s)", "tokens/s", "decode tok/s", "prompt tok", "completion tok",
                  "outcome",
                  title=f"{report['model']} ({report['backend']}), {report['machine']['cpus']} CPUs")  # fmt: skip
    for name, step in report["steps"].items():
        outcome = step.get("status") or step.get("slm_text_used") or step.get("source") or {}
        table.add_row(name, str(step.get("calls", 0)), str(step.get("latency_p50_s", "-")),
                      str(step.get("tokens_per_s", "-")), str(step.get("decode_tokens_per_s", "-")),
                      str(step.get("prompt_tokens_mean", "-")),
                      str(step.get("completion_tokens_mean", "-")), json.dumps(outcome))  # fmt: skip
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

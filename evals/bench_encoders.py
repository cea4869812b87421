"""Benchmark of the device encoders (CDA4Rec Eq. 4, trained with Eq. 10 or CE) on MovieLens.

    python -m evals.bench_encoders --data ml-1m
    python -m evals.bench_encoders --data ml-1m --runs sasrec:ce:16,sasrec:bpr:10
    python -m evals.bench_encoders --data ml-1m --runs sasrec:ce:10 --resume --lr 5e-4   # 10 more minutes

For each run (encoder:loss) it trains on the leave-one-out training sequences with early stopping on
validation NDCG@10, evaluates the test split by full ranking (seen items not masked; the masked figures
are reported beside them), and times inference:
- `infer_ms_per_user_L200`: batched encoding + full scoring of 256 users with length-200 histories;
- `device_p50_ms`: one user, length 200, encode + score 5,000 candidates, 1 thread, median of 200 calls
  (ML-1M has 3,706 items, so the 5,000 candidate ids are drawn with replacement).
`masked_seen` is the protocol of RecBole's published figures (its full-sort evaluation sets the scores of
the user's history items to -inf); the headline figures keep them, as CDA4Rec IV-A ranks against all items.
Results go to `evals/results/encoders_<data>.json`, rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ground.settings import Settings
from tools.checkpoints import default_checkpoint
from tools.data import leave_one_out, load
from tools.embeddings import item_semantics
from tools.encoders import SequentialEncoder
from tools.metrics import PopularityScorer, evaluate
from tools.training import TrainConfig, train_encoder

RESULTS_DIR = Path(__file__).parent / "results"

# Per-run settings chosen for a 2-core CPU; the time budget caps each run (early stopping may end it sooner).
RUN_SETTINGS: dict[str, dict[str, Any]] = {
    "sasrec": {"lr": 2e-3, "batch_size": 64, "model": {"layers": 2, "heads": 2, "dropout": 0.2}},
    "caser": {"lr": 1e-3, "batch_size": 128, "model": {"window": 5, "dropout": 0.3}},
    "surge": {"lr": 1e-3, "batch_size": 128, "samples_per_user": 8, "model": {"max_len": 50}},
}


def device_latency(model: SequentialEncoder, rng: np.random.Generator, reps: int = 200) -> dict[str, float]:
    """One user (length 200) encoded + 5,000 candidates scored, on 1 thread: p50/p90 in ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    history = [rng.integers(1, model.num_items + 1, size=200)]
    candidates = torch.from_numpy(rng.integers(1, model.num_items + 1, size=5000))  # with replacement
    times = []
    with torch.no_grad():
        for rep in range(reps + 20):
            start = time.perf_counter()
            user = model.encode(history)  # [1, d]
            scores = model.candidate_scores(user, candidates)  # [1, 5000]
            scores.topk(10)
            if rep >= 20:
                times.append((time.perf_counter() - start) * 1000)
    torch.set_num_threads(threads)
    return {"device_p50_ms": float(np.percentile(times, 50)), "device_p90_ms": float(np.percentile(times, 90))}


def batched_latency(model: SequentialEncoder, rng: np.random.Generator, users: int = 256) -> float:
    """Batched encode + full scoring of `users` length-200 histories: ms per user."""
    histories = [rng.integers(1, model.num_items + 1, size=200) for _ in range(users)]
    model.score_histories(histories[:8])  # warm-up
    start = time.perf_counter()
    model.score_histories(histories)
    return (time.perf_counter() - start) * 1000 / users


def run(
    data: str, runs: list[tuple[str, str, float]], out: Path, threads: int, resume: bool = False,
    lr: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    settings = Settings()
    torch.set_num_threads(threads)
    dataset = load(data, settings.data_dir)
    splits = leave_one_out(dataset, seed=settings.seed, max_len=settings.max_seq_len)
    table = item_semantics(dataset, settings.item_dim, settings.embeddings_dir, progress=False).table
    pop = evaluate(PopularityScorer(splits.train, dataset.catalog.num_items), splits.test)
    results: dict[str, Any] = {
        "data": data,
        "fingerprint": dataset.fingerprint(),
        "protocol": pop.protocol + "; leave-one-out test split, 10% users held out",
        "test_users": len(splits.test),
        "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "popularity": pop.metrics,
        "runs": [],
    }
    previous: dict[tuple[str, str], dict[str, Any]] = {}
    if out.is_file():  # keep earlier runs of other encoder:loss pairs on the same data
        earlier = json.loads(out.read_text())
        done = {(encoder, loss) for encoder, loss, _ in runs}
        if earlier.get("fingerprint") == results["fingerprint"]:
            results["runs"] = [r for r in earlier.get("runs", []) if (r["encoder"], r["loss"]) not in done]
            previous = {(r["encoder"], r["loss"]): r for r in earlier.get("runs", [])}
    print(f"popularity: {pop.line()}", flush=True)
    produced: set[tuple[str, str]] = set()
    for encoder, loss, minutes in runs:
        spec = {**RUN_SETTINGS[encoder], **({"lr": lr} if lr else {})}
        config = TrainConfig(
            encoder=encoder, loss=loss, epochs=200, patience=5, seed=settings.seed, threads=threads, max_valid=2000,
            time_budget_s=minutes * 60, **{k: v for k, v in spec.items() if k != "model"}, model=dict(spec["model"]),
        )  # fmt: skip
        print(f"== {encoder} ({loss}) budget {minutes} min", flush=True)
        started = time.perf_counter()
        path = default_checkpoint(settings.models_dir, encoder, dataset, loss)
        before = previous.get((encoder, loss), {}) if resume and path.is_file() else {}
        result = train_encoder(
            dataset, splits, config, item_table=table, checkpoint=path, progress=False,
            on_epoch=lambda row: print("  " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True),
            init_from=path if before else None,
        )  # fmt: skip
        train_minutes = (time.perf_counter() - started) / 60
        test = evaluate(result.model, splits.test)
        masked = evaluate(result.model, splits.test, mask_seen=True)
        rng = np.random.default_rng(settings.seed)
        entry = {
            "encoder": encoder,
            "loss": loss,
            **{k: round(v, 4) for k, v in test.metrics.items()},
            "masked_seen": {k: round(v, 4) for k, v in masked.metrics.items()},
            "valid": {k: round(v, 4) for k, v in result.best_valid.items()},
            "epochs": result.epochs_run + before.get("epochs", 0),
            "resumed_after_epochs": before.get("epochs", 0),
            "best_epoch": result.best_epoch,
            "seconds_per_epoch": round(result.seconds_per_epoch, 1),
            "train_minutes": round(train_minutes + before.get("train_minutes", 0.0), 1),
            "stopped_by": result.stopped_by,
            "infer_ms_per_user_L200": round(batched_latency(result.model, rng), 3),
            **{k: round(v, 3) for k, v in device_latency(result.model, rng).items()},
            "params": sum(p.numel() for p in result.model.parameters()),
            "config": {"lr": config.lr, "batch_size": config.batch_size, "threads": threads,
                       "valid_users": len(splits.valid[:2000]), **result.model.config()},  # fmt: skip
        }
        print(f"test: {test.line()}\n  {json.dumps(entry)}", flush=True)
        results["runs"].append(entry)
        produced.add((encoder, loss))
        _write(out, results, produced)
    return results


def _write(out: Path, results: dict[str, Any], produced: set[tuple[str, str]]) -> None:
    """Write the runs this process `produced`, keeping every other run found in `out` now (atomic replace).

    Re-reading at write time lets two benchmark processes (e.g. one per encoder) share one results file.
    """
    if out.is_file():
        on_disk = json.loads(out.read_text())
        if on_disk.get("fingerprint") == results["fingerprint"]:
            others = [r for r in on_disk.get("runs", []) if (r["encoder"], r["loss"]) not in produced]
            mine = [r for r in results["runs"] if (r["encoder"], r["loss"]) in produced]
            results = {**results, "runs": others + mine}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument(
        "--runs", default="sasrec:ce:22,caser:ce:7,surge:ce:7",
        help="comma-separated encoder:loss[:minutes], minutes = training time budget of that run",
    )  # fmt: skip
    parser.add_argument("--minutes", type=float, default=12.0, help="time budget of runs that name none")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="continue each run from its saved checkpoint")
    parser.add_argument("--lr", type=float, default=None, help="learning rate for every run (e.g. lower to anneal)")
    args = parser.parse_args(argv)
    runs = []
    for item in args.runs.split(","):
        encoder, loss, *minutes = item.split(":")
        runs.append((encoder, loss, float(minutes[0]) if minutes else args.minutes))
    out = args.out or RESULTS_DIR / f"encoders_{args.data}.json"
    run(args.data, runs, out, args.threads, resume=args.resume, lr=args.lr)


if __name__ == "__main__":
    main()

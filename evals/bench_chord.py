"""CHORD benchmark: per-user mixed precision vs uniform quantization (a Table 2 of CHORD for Tandem).

    python -m evals.bench_chord --data ml-100k
    python -m evals.bench_chord --data ml-1m --wall-minutes 20

For each encoder (SASRec by default; `--encoders sasrec,caser`) it takes the pretrained checkpoint at
`default_checkpoint(models_dir, encoder, data, "ce")` (trained with `train_encoder` under a time budget when
there is none, or when the one there is a smoke-test checkpoint trained for under `--min-pretrain-s`), then
evaluates on the leave-one-out test split, by full ranking (seen items not masked):

- full precision (32 bits), uniform 8-bit and 4-bit per-channel min-max quantization (and 2-bit, for scale),
  all with the packed device path of `tools.quant.packed`;
- CHORD: profiler + hypernetworks trained against the frozen encoder (`tools.chord.train_chord`), beta
  calibrated on validation users so that the mean average bits meet each of `--target-bits`, and every
  user's strategy passed through the device transform T with that budget (CHORD Eq. 4), so no user exceeds
  it (`--untrained` adds the same pipeline with untrained hypernetworks, an ablation). Each test user is
  scored by its OWN packed quantized encoder (`ChordScorer`).

Columns: NDCG@5/10, HR@5/10, average bits per weight, bits transmitted per user (CHORD: the 2-bit strategy;
the others: their quantized weights + per-channel scale / zero-point) and how many times smaller that is
than the 32-bit weights of the same layers, and model memory in bytes (quantized layers packed; the item
table and norms stay float32). Results go to `evals/results/chord_<data>.json` and `chord_<data>.md`, the
trained CHORD to `default_chord_checkpoint(models_dir, encoder, data)`.
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
from tools.checkpoints import default_checkpoint, file_digest, load_encoder
from tools.chord import (
    Chord,
    ChordConfig,
    ChordScorer,
    FakeQuantChordScorer,
    default_chord_checkpoint,
    layer_specs,
    load_chord,
    new_chord,
    save_chord,
    train_chord,
)
from tools.data import Dataset, EvalInstance, Splits, leave_one_out, load
from tools.embeddings import item_semantics
from tools.encoders import SequentialEncoder
from tools.metrics import evaluate
from tools.quant import DeviceResources, average_bits, memory_report, quantize_model
from tools.training import TrainConfig, train_encoder

RESULTS_DIR = Path(__file__).parent / "results"
PRETRAIN: dict[str, dict[str, Any]] = {  # the settings evals.bench_encoders uses on a 2-core CPU
    "sasrec": {"lr": 2e-3, "batch_size": 64, "model": {"layers": 2, "heads": 2, "dropout": 0.2}},
    "caser": {"lr": 1e-3, "batch_size": 128, "model": {"window": 5, "dropout": 0.3}},
}
METRICS = ("NDCG@5", "HR@5", "NDCG@10", "HR@10")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def pretrained_encoder(
    name: str, dataset: Dataset, splits: Splits, settings: Settings, budget_s: float, min_pretrain_s: float
) -> tuple[SequentialEncoder, dict[str, Any]]:
    """The shared pretrained checkpoint, or one trained here (saved beside it, never over it)."""
    path = default_checkpoint(settings.models_dir, name, dataset, "ce")
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=True)
        budget = payload["train_config"].get("time_budget_s")
        if budget is None or budget >= min_pretrain_s:
            log(f"{name}: pretrained checkpoint {path} (valid {payload['best_valid']})")
            return load_encoder(path, dataset), {"checkpoint": str(path), "sha256": file_digest(path),
                                                 "valid": payload["best_valid"], "shared_with_eval_rec": True}
        log(f"{name}: {path} was trained for only {budget:.0f} s (a smoke checkpoint): training one for CHORD")
    own = path.with_name(f"{name}-ce-chord.pt")
    if own.is_file():
        payload = torch.load(own, map_location="cpu", weights_only=True)
        log(f"{name}: CHORD's own pretrained checkpoint {own} (valid {payload['best_valid']})")
        return load_encoder(own, dataset), {"checkpoint": str(own), "sha256": file_digest(own),
                                            "valid": payload["best_valid"], "shared_with_eval_rec": False}
    spec = PRETRAIN[name]
    config = TrainConfig(encoder=name, loss="ce", epochs=200, patience=5, seed=settings.seed, threads=2,  # type: ignore[arg-type]
                         time_budget_s=budget_s, **{k: v for k, v in spec.items() if k != "model"},
                         model=dict(spec["model"]))  # fmt: skip
    table = item_semantics(dataset, settings.item_dim, settings.embeddings_dir, progress=False).table
    log(f"{name}: training with a {budget_s / 60:.1f} min budget -> {own}")
    result = train_encoder(
        dataset, splits, config, item_table=table, checkpoint=own, progress=False,
        on_epoch=lambda row: log(f"  epoch {row['epoch']}: NDCG@10 {row['NDCG@10']:.4f}"),
    )  # fmt: skip
    return result.model, {"checkpoint": str(own), "sha256": file_digest(own), "valid": result.best_valid,
                          "stopped_by": result.stopped_by, "shared_with_eval_rec": False}


def layer_weights(encoder: SequentialEncoder) -> tuple[int, int]:
    """(weights, output channels) of the quantizable layers."""
    specs = layer_specs(encoder)
    return sum(s.channels * s.fan_in for s in specs), sum(s.channels for s in specs)


def uniform_row(
    encoder: SequentialEncoder, bits: int | None, test: list[EvalInstance]
) -> tuple[dict[str, Any], np.ndarray]:
    """Full precision (bits None) or uniform per-channel min-max quantization at `bits`."""
    weights, channels = layer_weights(encoder)
    model = encoder if bits is None else quantize_model(encoder, bits, "minmax")
    report = evaluate(model, test)
    mem = memory_report(model)
    if bits is None:
        sent = 32 * weights
    else:  # quantized weights + fp32 scale and 8-bit zero-point per channel
        sent = bits * weights + 40 * channels
    return {"method": "full precision" if bits is None else f"uniform {bits}-bit min-max",
            **{k: round(report.metrics[k], 4) for k in METRICS}, "avg_bits": float(bits or 32),
            "bits_sent_per_user": sent, "vs_fp32_weights": round(32 * weights / sent, 2),
            "memory_bytes": mem.total_bytes, "layer_bytes": mem.layer_bytes}, report.ranks  # fmt: skip


def calibrate_beta(chord: Chord, valid: list[EvalInstance], target: float, n_users: int = 300) -> float:
    """Largest beta (step 0.01) whose mean average bits over validation users stay <= target."""
    fan_in = [s.fan_in for s in chord.specs]
    z = chord.profile([inst.history for inst in valid[:n_users]])
    best = 0.0
    for beta in np.arange(0.0, 0.501, 0.01):
        bits = chord.bits(z, float(beta))  # n x [B, C]
        mean = float(np.mean([average_bits([b[u] for b in bits], fan_in) for u in range(len(z))]))
        if mean <= target + 1e-9:
            best = float(beta)
    return round(best, 2)


def train_row_chord(
    encoder: SequentialEncoder, splits: Splits, config: ChordConfig, checkpoint: Path
) -> tuple[Chord, dict[str, Any]]:
    """Train CHORD's profiler and hypernetworks against the frozen encoder, saved at `checkpoint`."""
    result = train_chord(encoder, splits.train, config, log=log)
    save_chord(checkpoint, result.chord, encoder)
    log(f"{encoder.name}: CHORD trained {result.steps} steps in {result.seconds:.0f} s "
        f"(loss {np.mean(result.losses[:10]):.4f} -> {np.mean(result.losses[-10:]):.4f})")  # fmt: skip
    return result.chord, {"train_steps": result.steps, "train_seconds": round(result.seconds, 1),
                          "stopped_by": result.stopped_by, "checkpoint": str(checkpoint),
                          "loss_first10": round(float(np.mean(result.losses[:10])), 4),
                          "loss_last10": round(float(np.mean(result.losses[-10:])), 4),
                          "config": {k: v for k, v in vars(config).items() if k != "extra"}}  # fmt: skip


def chord_row(
    chord: Chord, encoder: SequentialEncoder, splits: Splits, target: float, label: str, check_users: int = 64
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """Calibrate beta for `target` bits, then score every test user with its own packed quantized encoder."""
    weights, channels = layer_weights(encoder)
    beta = calibrate_beta(chord, splits.valid, target)
    log(f"{encoder.name}: {label}: beta -> {beta}")
    scorer = ChordScorer(chord, encoder, beta=beta, resources=DeviceResources(max_avg_bits=target))
    report = evaluate(scorer, splits.test)
    # the packed device path against the batched fake-quantized path, same strategies (T off)
    check = [i.history for i in splits.test[:check_users]]
    packed = ChordScorer(chord, encoder, beta=beta).score_histories(check)
    fake = FakeQuantChordScorer(chord, encoder, beta=beta).score_histories(check)
    diff = float((packed[:, 1:] - fake[:, 1:]).abs().max())
    bits = np.array(scorer.avg_bits)
    payload = float(np.mean(scorer.payload_bits))
    row = {"method": label, **{k: round(report.metrics[k], 4) for k in METRICS},
           "avg_bits": round(float(bits.mean()), 3), "bits_sent_per_user": payload,
           "vs_fp32_weights": round(32 * weights / payload, 2), "memory_bytes": int(np.mean(scorer.memory)),
           "layer_bytes": int(np.mean(scorer.memory)) - memory_report(encoder).other_bytes}  # fmt: skip
    detail = {"method": label, "beta": beta, "max_user_avg_bits": round(float(bits.max()), 3),
              "min_user_avg_bits": round(float(bits.min()), 3), "channels": channels, "weights": weights,
              "packed_vs_fake_max_abs_score_diff": diff}  # fmt: skip
    return row, detail, report.ranks


def paired_difference(ranks: np.ndarray, baseline: np.ndarray, k: int = 10) -> dict[str, float]:
    """Per-user NDCG@k and HR@k differences (method - baseline) on the same users: mean and 95% normal CI."""
    out: dict[str, float] = {}
    for name, gain in (("NDCG", lambda r: np.where(r < k, 1.0 / np.log2(r + 2.0), 0.0)),
                       ("HR", lambda r: (r < k).astype(float))):  # fmt: skip
        diff = gain(ranks.astype(float)) - gain(baseline.astype(float))
        half = 1.96 * float(diff.std(ddof=1)) / np.sqrt(len(diff))
        out[f"d{name}@{k}"], out[f"d{name}@{k}_ci95"] = round(float(diff.mean()), 4), round(half, 4)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"CHORD benchmark on {results['data']} ({results['test_users']} test users, {results['protocol']})", ""]
    for enc in results["encoders"]:
        shared = "the checkpoint `tandem eval rec` uses" if enc["pretrained"].get("shared_with_eval_rec") else \
            "CHORD's own checkpoint (not the one `tandem eval rec` uses)"
        digest = enc["pretrained"].get("sha256", "")[:12]
        lines += [f"**{enc['encoder']}** ({shared}, sha256 {digest or 'not recorded'}, valid NDCG@10 "
                  f"{enc['pretrained']['valid'].get('NDCG@10', 0):.4f})", "",
                  "| method | avg bits | NDCG@5 | HR@5 | NDCG@10 | HR@10 | bits sent / user | x smaller than "
                  "fp32 weights | memory (bytes) | quantized-layer bytes |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in enc["rows"]:
            lines.append(f"| {r['method']} | {r['avg_bits']:g} | {r['NDCG@5']:.4f} | {r['HR@5']:.4f} | "
                         f"{r['NDCG@10']:.4f} | {r['HR@10']:.4f} | {r['bits_sent_per_user']:,.0f} | "
                         f"{r['vs_fp32_weights']:g} | {r['memory_bytes']:,} | {r['layer_bytes']:,} |")  # fmt: skip
        t = enc["chord_training"]
        lines.append("")
        if "train_steps" in t:
            lines.append(f"CHORD training: {t['train_steps']} steps in {t['train_seconds']:.0f} s "
                         f"({t['stopped_by']}), loss (first / last 10 steps) {t['loss_first10']:.4f} -> "
                         f"{t['loss_last10']:.4f}.")  # fmt: skip
        if t.get("reused"):
            lines.append(f"This run reused the trained profiler + hypernetworks at {t['checkpoint']}.")
        for d in enc["chord"]:
            v = d["vs_uniform_4bit"]
            lines.append(f"- {d['method']}: beta {d['beta']}, per-user average bits {d['min_user_avg_bits']:g}-"
                         f"{d['max_user_avg_bits']:g}, {d['channels']} channels / {d['weights']:,} weights, packed vs "
                         f"fake-quantized max |score diff| {d['packed_vs_fake_max_abs_score_diff']:.2e}; vs uniform "
                         f"4-bit, paired per user: NDCG@10 {v['dNDCG@10']:+.4f} +- {v['dNDCG@10_ci95']:.4f}, "
                         f"HR@10 {v['dHR@10']:+.4f} +- {v['dHR@10_ci95']:.4f} (95% CI)")  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def run(
    data: str, encoders: list[str], targets: list[float], steps: int, wall_minutes: float, threads: int,
    pretrain_minutes: float, min_pretrain_s: float, max_test: int | None, untrained: bool, reuse_chord: bool,
    suffix: str = "",
) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    torch.set_num_threads(threads)
    settings = Settings()
    dataset = load(data, settings.data_dir)
    splits = leave_one_out(dataset, seed=settings.seed, max_len=settings.max_seq_len)
    test = splits.test[:max_test] if max_test else splits.test
    out_json = RESULTS_DIR / f"chord_{data}{suffix}.json"
    results: dict[str, Any] = {
        "data": data, "fingerprint": dataset.fingerprint(), "test_users": len(test), "target_bits": targets,
        "protocol": "full ranking against all items, seen items not masked, leave-one-out test split",
        "machine": f"{platform.machine()} {threads} torch threads, torch {torch.__version__}", "encoders": [],
    }  # fmt: skip
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    earlier_training: dict[str, dict[str, Any]] = {}  # how a reused CHORD was trained, from the previous run
    if out_json.is_file():
        earlier = json.loads(out_json.read_text())
        if earlier.get("fingerprint") == results["fingerprint"]:
            earlier_training = {e["encoder"]: e.get("chord_training", {}) for e in earlier.get("encoders", [])}
    for name in encoders:
        encoder, pretrained = pretrained_encoder(name, dataset, splits, settings, pretrain_minutes * 60, min_pretrain_s)
        encoder.eval()
        rows = []
        uniform_ranks: dict[int | None, np.ndarray] = {}
        for bits in (None, 8, 4, 2):
            row, ranks = uniform_row(encoder, bits, test)
            rows.append(row)
            uniform_ranks[bits] = ranks
            log(f"{name}: {rows[-1]}")
        spent = (time.perf_counter() - started) / 60
        budget_s = max(60.0, (wall_minutes - spent) * 60 * 0.4 / max(1, len(encoders) - encoders.index(name)))
        config = ChordConfig(steps=steps, threads=threads, seed=settings.seed, time_budget_s=budget_s)
        log(f"{name}: training CHORD for <= {steps} steps / {budget_s / 60:.1f} min")
        split = Splits(splits.train, splits.valid, test, splits.fewshot, splits.heldout_users, splits.max_len)
        checkpoint = default_chord_checkpoint(settings.models_dir, name, dataset)
        if reuse_chord and checkpoint.is_file():
            chord = load_chord(checkpoint, encoder)
            trained = {**earlier_training.get(name, {}), "checkpoint": str(checkpoint), "reused": True}
            log(f"{name}: reusing the trained CHORD at {checkpoint}")
        else:
            chord, trained = train_row_chord(encoder, split, config, checkpoint)
        details: list[dict[str, Any]] = []
        runs = [(chord, t, f"CHORD (<= {t:g} bits)") for t in targets]
        if untrained:
            runs.append((new_chord(encoder, config), targets[0], f"CHORD untrained hypernets (<= {targets[0]:g} bits)"))
        for model, target, label in runs:
            row, detail, ranks = chord_row(model, encoder, split, target, label)
            detail["vs_uniform_4bit"] = paired_difference(ranks, uniform_ranks[4])
            rows.append(row)
            details.append(detail)
            log(f"{name}: {row} {detail}")
        results["encoders"].append(
            {"encoder": name, "pretrained": pretrained, "rows": rows, "chord_training": trained, "chord": details}
        )
        out_json.write_text(json.dumps(results, indent=2) + "\n")
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    out_json.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS_DIR / f"chord_{data}{suffix}.md").write_text(markdown(results))
    print(markdown(results), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["ml-100k", "ml-1m"], default="ml-100k")
    parser.add_argument("--encoders", default="sasrec", help="comma-separated: sasrec,caser")
    parser.add_argument("--target-bits", default="4,3", help="CHORD's average-bit budgets, comma-separated")
    parser.add_argument("--untrained", action="store_true", help="also evaluate CHORD with untrained hypernets")
    parser.add_argument("--suffix", default="", help="results go to chord_<data><suffix>.json / .md")
    parser.add_argument("--reuse-chord", action="store_true", help="load the trained CHORD checkpoint if there is one")
    parser.add_argument("--steps", type=int, default=600, help="CHORD training steps (batch 64)")
    parser.add_argument("--wall-minutes", type=float, default=20.0, help="soft cap on the whole run")
    parser.add_argument("--pretrain-minutes", type=float, default=4.0, help="budget when an encoder must be trained")
    parser.add_argument("--min-pretrain-s", type=float, default=60.0, help="shorter-trained checkpoints are smoke")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-test", type=int, default=None, help="evaluate only the first N test users")
    args = parser.parse_args(argv)
    targets = [float(t) for t in args.target_bits.split(",") if t.strip()]
    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    run(args.data, encoders, targets, args.steps, args.wall_minutes, args.threads, args.pretrain_minutes,
        args.min_pretrain_s, args.max_test, args.untrained, args.reuse_chord, args.suffix)  # fmt: skip


if __name__ == "__main__":
    main()

"""SASRec recipe benchmark: time-to-accuracy of a named training recipe on MovieLens (issue 14).

    python -m evals.bench_sasrec --data ml-1m --recipe sasrec-full-ce@4          # 45 min, snapshots at 10, 20
    python -m evals.bench_sasrec --data ml-1m --label no-mask --set mask_history=false --minutes 12 --scratch
    python -m evals.bench_sasrec --data ml-1m --compare RUN_A RUN_B    # RUN_B minus RUN_A, paired over test users
    python -m evals.bench_sasrec --data ml-1m --install RUN            # make RUN's checkpoint the device's SASRec

Trains the recipe on the leave-one-out training split `tandem eval rec` uses (seeded; 10% of users held out),
with the epoch chosen on validation only, and writes the checkpoint where `tandem train` and the runtime look
for it (`--scratch` writes it to a scratch folder instead). It then evaluates the test split by full ranking
with the user's history masked (the protocol of `eval rec` and of RecBole's published figures) and without,
for the final checkpoint and for the best checkpoint known at each snapshot moment (what a 10- or 20-minute
cut of the same run had saved). Wall-clock figures depend on the machine's load: every epoch row records
`os.getloadavg()`, and epochs-to-accuracy (a count that does not depend on load) is reported beside seconds.
Results go to `evals/results/sasrec_<data>.json` (one entry per label, rewritten after each run) and the
validation curves to `evals/results/sasrec_<data>.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ground.files import copy_file, write_json
from ground.settings import Settings
from tools.checkpoints import default_checkpoint, file_digest
from tools.curves import plot_training_curves
from tools.data import Dataset, Splits, leave_one_out, load
from tools.embeddings import item_semantics
from tools.encoders import build_encoder
from tools.metrics import PopularityScorer, evaluate, paired_bootstrap, per_user
from tools.recipes import DEFAULT_RECIPE, RECIPES, recipe_config
from tools.training import load_encoder, train_encoder

RESULTS_DIR = Path(__file__).parent / "results"
THRESHOLDS = (0.25, 0.28, 0.30, 0.31)  # validation HR@10 (history masked) for epochs-to-accuracy
TARGETS = {"HR@10": 0.31, "NDCG@10": 0.175}


def parse_value(text: str) -> Any:
    """`--set key=value` values: booleans, numbers, else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def time_to_accuracy(history: list[dict[str, float]]) -> dict[str, dict[str, float] | None]:
    """For each threshold, the first epoch (and its wall-clock seconds) whose validation HR@10 reaches it."""
    out: dict[str, dict[str, float] | None] = {}
    for threshold in THRESHOLDS:
        row = next((r for r in history if r["HR@10"] >= threshold), None)
        out[f"HR@10>={threshold}"] = {"epoch": row["epoch"], "seconds": round(row["elapsed"], 1)} if row else None
    return out


def _flat(overrides: dict[str, Any]) -> dict[str, Any]:
    """`--set` form of the overrides: the model's settings as model.NAME (only those differing from the recipe's
    are worth reading, but all are listed so the command is complete)."""
    flat = {k: v for k, v in overrides.items() if k != "model"}
    flat.update({f"model.{k}": v for k, v in overrides.get("model", {}).items()})
    return flat


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def _split(settings: Settings, data: str) -> tuple[Dataset, Splits]:
    """The data set and the leave-one-out split `tandem eval rec` uses."""
    dataset = load(data, settings.data_dir)
    return dataset, leave_one_out(dataset, seed=settings.seed, max_len=settings.max_seq_len,
                                  fewshot_fraction=settings.fewshot_fraction)  # fmt: skip


def run(data: str, recipe: str, label: str, overrides: dict[str, Any], snapshots: tuple[float, ...], scratch: bool,
        out: Path, resume: bool = False) -> dict[str, Any]:  # fmt: skip
    settings = Settings()
    dataset, splits = _split(settings, data)
    config = recipe_config(recipe, seed=settings.seed, snapshot_s=tuple(m * 60 for m in snapshots), **overrides)
    path = default_checkpoint(settings.models_dir, "sasrec", dataset, "ce")
    if scratch:
        path = settings.home / "scratch" / f"{label}.pt"
    resumed = {"from": str(path), "digest": file_digest(path)} if resume and path.is_file() else None
    prior = torch.load(path, map_location="cpu", weights_only=True).get("history", []) if resumed else []
    offset = prior[-1]["elapsed"] if prior else 0.0  # a resumed run's curve continues the earlier one
    load_start = os.getloadavg()
    print(f"== {label}: recipe {recipe} {overrides or ''} -> {path}", flush=True)

    def on_epoch(row: dict[str, float]) -> None:
        row["loadavg_1m"] = os.getloadavg()[0]
        print("  " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)

    started = time.perf_counter()
    table = item_semantics(dataset, settings.item_dim, settings.embeddings_dir, progress=False).table
    result = train_encoder(dataset, splits, config, item_table=table if config.semantic_init else None,
                           checkpoint=path, progress=False, on_epoch=on_epoch,
                           init_from=path if resumed else None)  # fmt: skip
    wall = time.perf_counter() - started
    seen = {"mask_seen": True}  # every item seen before the target (`EvalInstance.masked`)
    final = {"test_masked": _rounded(evaluate(result.model, splits.test, **seen).metrics),
             "test_unmasked": _rounded(evaluate(result.model, splits.test).metrics)}  # fmt: skip
    cuts = {}
    for moment, snap in sorted(result.snapshots.items()):
        model = build_encoder("sasrec", **result.model.config())
        model.load_state_dict(snap["state"])
        test = evaluate(model.eval(), splits.test, **seen).metrics
        cuts[f"{moment / 60:g} min"] = {"best_epoch": snap["epoch"], "valid_masked": _rounded(snap["valid"]),
                                        "test_masked": _rounded(test)}  # fmt: skip
    pop = evaluate(PopularityScorer(splits.train, dataset.catalog.num_items), splits.test, **seen)
    entry = {
        "label": label,
        "recipe": recipe,
        "overrides": {k: v for k, v in overrides.items()},
        "command": f"python -m evals.bench_sasrec --data {data} --recipe {recipe} --label {label}"
        + "".join(f" --set {k}={v}" for k, v in _flat(overrides).items()) + (" --resume" if resumed else "")
        + (" --scratch" if scratch else ""),
        "resumed_from": resumed,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "snapshot_s"},
        **final,
        "valid_masked": _rounded(result.best_valid),
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "stopped_by": result.stopped_by,
        "wall_minutes": round(wall / 60, 1),
        "seconds_per_epoch": round(result.seconds_per_epoch, 1),
        "epochs_to_accuracy": time_to_accuracy(result.history),
        "snapshots": cuts,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {result.threads} torch threads on {result.device}, "
        f"torch {torch.__version__}",
        "loadavg_start": [round(v, 2) for v in load_start],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "checkpoint": str(path),
        "checkpoint_digest": file_digest(path),
        "curve_offset_s": round(offset, 1),
        "curve": [{k: round(v, 4) for k, v in row.items()} for row in result.history],
    }
    print(json.dumps({k: v for k, v in entry.items() if k != "curve"}, indent=1), flush=True)
    results = json.loads(out.read_text()) if out.is_file() else {}
    if results.get("fingerprint") != dataset.fingerprint():
        results = {"data": data, "fingerprint": dataset.fingerprint(), "runs": {}}
    results.update({
        "protocol": pop.protocol + "; leave-one-out test split of `tandem eval rec` (10% users held out), "
        "epoch chosen on validation (history masked)",
        "test_users": len(splits.test),
        "popularity_masked": _rounded(pop.metrics),
        "targets": TARGETS,
    })  # fmt: skip
    results["runs"][label] = entry
    write_json(out, results)
    plot(results, out.with_suffix(".png"))
    return entry


def compare(out: Path, base: str, other: str) -> dict[str, Any]:
    """`other` minus `base` on the test users with paired 95% bootstrap intervals over users (HR@10, NDCG@10,
    history masked), from the two runs' checkpoints (their digests must still match the results file); stored
    under `comparisons` in the results file."""
    results = json.loads(out.read_text())
    dataset, splits = _split(Settings(), results["data"])
    ranks, digests = {}, {}
    for label in (base, other):
        run_entry = results["runs"].get(label)
        if run_entry is None:
            raise SystemExit(f"no run {label!r} in {out}; runs: {', '.join(results['runs'])}")
        path = Path(run_entry["checkpoint"])
        digests[label] = file_digest(path) if path.is_file() else None
        if digests[label] != run_entry["checkpoint_digest"]:
            raise SystemExit(f"the checkpoint of {label!r} ({path}) is missing or no longer the one the run wrote")
        model = load_encoder(path, dataset)
        ranks[label] = evaluate(model, splits.test, mask_seen=True).ranks
    entry = {"protocol": f"{other} minus {base}, {len(splits.test)} test users, history masked, full ranking; "
             "paired 95% bootstrap over users (2,000 resamples)", "checkpoints": digests}  # fmt: skip
    for metric in ("HR@10", "NDCG@10"):
        a, b = per_user(ranks[base], metric), per_user(ranks[other], metric)
        entry[metric] = {base: round(float(a.mean()), 4), other: round(float(b.mean()), 4),
                         "difference": paired_bootstrap(b, a).text()}  # fmt: skip
    results.setdefault("comparisons", {})[f"{other} minus {base}"] = entry
    write_json(out, results)
    print(json.dumps(entry, indent=1))
    return entry


def install(out: Path, label: str) -> Path:
    """Make run `label`'s checkpoint the one `tandem eval rec` and the runtime load
    (`<models>/<data>-<fingerprint>/sasrec-ce.pt`), after checking its digest against the results file, with its
    validation curve beside it. The file is copied whole (atomically); the run's entry records where and when."""
    results = json.loads(out.read_text())
    entry = results["runs"].get(label)
    if entry is None:
        raise SystemExit(f"no run {label!r} in {out}; runs: {', '.join(results['runs'])}")
    source = Path(entry["checkpoint"])
    if not source.is_file() or file_digest(source) != entry["checkpoint_digest"]:
        raise SystemExit(f"the checkpoint of {label!r} ({source}) is missing or no longer the one the run wrote")
    settings = Settings()
    dataset = load(results["data"], settings.data_dir)
    if dataset.fingerprint() != results["fingerprint"]:
        raise SystemExit(f"{out} was measured on another copy of {results['data']} (fingerprint differs)")
    target = default_checkpoint(settings.models_dir, "sasrec", dataset, "ce")
    if target.resolve() != source.resolve():
        copy_file(source, target)
    plot_training_curves({label: entry["curve"]}, target.with_suffix(".curve.png"),
                         f"sasrec on {results['data']}: validation (history masked, full ranking)")  # fmt: skip
    entry["installed"] = {"path": str(target), "at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    write_json(out, results)
    print(f"installed {label} ({entry['checkpoint_digest'][:12]}) as {target}")
    return target


def plot(results: dict[str, Any], path: Path) -> Path:
    """Every run's validation curve; a resumed run starts where the run it continues ended."""
    curves = {name: [{**row, "elapsed": row["elapsed"] + entry.get("curve_offset_s", 0.0)} for row in entry["curve"]]
              for name, entry in results["runs"].items()}  # fmt: skip
    return plot_training_curves(curves, path, f"SASRec on {results['data']}: validation (history masked, full "
                                "ranking) vs minutes of the budget clock (wall, or CPU time / threads)",
                                targets=TARGETS)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES))
    parser.add_argument("--label", default=None, help="name of this run in the results (default: the recipe)")
    parser.add_argument("--minutes", type=float, default=None, help="time budget (default: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe setting (model.NAME=VALUE for the architecture)")
    parser.add_argument("--snapshots", default="10,20", help="minutes at which to keep the best checkpoint so far")
    parser.add_argument("--scratch", action="store_true", help="write the checkpoint to <home>/scratch, not the "
                        "standard location")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at the output path "
                        "(a fresh optimiser and schedule; the checkpoint is the epoch to beat)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the results file and stop")
    parser.add_argument("--compare", nargs=2, metavar=("BASE", "OTHER"), help="OTHER minus BASE (two run labels) on "
                        "the test users, paired intervals over users; stored in the results file, no training")
    parser.add_argument("--install", metavar="RUN", help="copy RUN's checkpoint (digest checked) to where `tandem eval "
                        "rec` and the runtime load the device's SASRec; no training")  # fmt: skip
    args = parser.parse_args(argv)
    if args.install:
        install(args.out or RESULTS_DIR / f"sasrec_{args.data}.json", args.install)
        return
    if args.compare:
        compare(args.out or RESULTS_DIR / f"sasrec_{args.data}.json", *args.compare)
        return
    if args.plot_only:
        out = args.out or RESULTS_DIR / f"sasrec_{args.data}.json"
        print(plot(json.loads(out.read_text()), out.with_suffix(".png")))
        return
    overrides: dict[str, Any] = {}
    model: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        if key.startswith("model."):  # e.g. model.dim=128: one architecture setting, the others the recipe's
            model[key.removeprefix("model.")] = parse_value(value)
        else:
            overrides[key] = parse_value(value)
    if model:
        overrides["model"] = {**RECIPES[args.recipe]["model"], **model}
    if args.minutes:
        overrides["time_budget_s"] = args.minutes * 60
    snapshots = tuple(float(m) for m in args.snapshots.split(",") if m.strip())
    out = args.out or RESULTS_DIR / f"sasrec_{args.data}.json"
    run(args.data, args.recipe, args.label or args.recipe, overrides, snapshots, args.scratch, out, args.resume)


if __name__ == "__main__":
    main()

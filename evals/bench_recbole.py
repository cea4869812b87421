"""Side-by-side training speed: RecBole 1.2.1's SASRec and Tandem's on the same exported split (issue 14).

    python -m evals.bench_recbole --data ml-1m --minutes 20 --tandem-run <label in sasrec_ml-1m.json>

1. A scratch environment `<home>/scratch/recbole-1.2.1/venv` gets RecBole 1.2.1 and its dependencies (pinned
   below; never the project's own environment). RecBole 1.2.1 needs numpy < 2 and declares ray <= 2.6.3, which
   only its hyper-parameter tuner imports, so RecBole is installed without it.
2. `tandem data export --format recbole` writes Tandem's exact leave-one-out split (`tools.data.export`).
3. `evals/recbole_runner.py` trains RecBole's SASRec inside that environment for the same wall-clock budget,
   with the architecture of the Tandem run it is compared with (layers, heads, width, feed-forward width,
   dropout, history length, learning rate) and RecBole's own training loop otherwise (one prefix per sample,
   `--batch-size` prefixes per step), validating with RecBole's full-ranking evaluator (history masked) every
   `--validate-every` seconds of training (`recbole_runner.Rounds`: the same pass over the data, validated
   more often than once per epoch); the best checkpoint known at each snapshot moment is tested as well.
4. The Tandem side is the run `--tandem-run` of `evals/results/sasrec_<data>.json` (written by
   `evals.bench_sasrec` on this machine): its validation curve, its 10- and 20-minute cuts and its test
   figures.

Both sides report time-to-accuracy (the first wall-clock second at which validation HR@10 reaches 0.25, 0.28,
0.30, 0.31) and test HR@10 / NDCG@10 of the best checkpoint known at each cut. Results go to
`evals/results/recbole_<data>.json` and both validation curves to `evals/results/recbole_<data>.png`.
Run it on a quiet machine: the two sides are measured one after the other, not at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from evals.bench_sasrec import TARGETS, THRESHOLDS, time_to_accuracy
from ground.errors import TandemError
from ground.settings import Settings
from tools.curves import plot_training_curves
from tools.data import leave_one_out, load
from tools.data.export import export_recbole, recbole_sasrec

RESULTS_DIR = Path(__file__).parent / "results"
RUNNER = Path(__file__).with_name("recbole_runner.py")
# RecBole 1.2.1 and what it imports, at versions that still have the numpy 1 API it uses (np.float_ etc.).
RECBOLE_PINS = (
    "torch==2.13.0", "numpy==1.26.4", "scipy==1.11.4", "pandas==2.1.4", "scikit-learn==1.3.2", "pyyaml>=6",
    "tqdm>=4.48.2", "colorlog==4.7.2", "colorama==0.4.4", "tensorboard>=2.5.0", "thop>=0.1.1.post2207130030",
    "tabulate>=0.8.10", "plotly>=4.0.0", "texttable>=0.9.0", "psutil>=5.9.0",
)  # fmt: skip


def ensure_recbole_env(root: Path) -> Path:
    """The scratch environment's python, created and filled on first use (a stamp records the pins)."""
    venv = root / "venv"
    python = venv / "bin" / "python"
    stamp = venv / "tandem-pins.txt"
    wanted = "\n".join(("recbole==1.2.1", *RECBOLE_PINS)) + "\n"
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    print(f"installing RecBole 1.2.1 into the scratch environment {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    try:
        subprocess.run([*pip, *RECBOLE_PINS], check=True)
        subprocess.run([*pip, "--no-deps", "recbole==1.2.1"], check=True)
    except subprocess.CalledProcessError as exc:
        raise TandemError(f"could not install RecBole into {venv}: pip exited with {exc.returncode}") from exc
    stamp.write_text(wanted)
    return python


def tandem_side(results_file: Path, label: str | None) -> tuple[str, dict[str, Any]]:
    """The Tandem SASRec run to compare with: `label`, or the run with the best validation NDCG@10."""
    if not results_file.is_file():
        raise TandemError(f"{results_file} is missing: run `python -m evals.bench_sasrec` first")
    runs = json.loads(results_file.read_text())["runs"]
    if label is None:
        label = max(runs, key=lambda name: runs[name]["valid_masked"]["NDCG@10"])
    if label not in runs:
        raise TandemError(f"no run {label!r} in {results_file}; runs: {', '.join(runs)}")
    return label, runs[label]


def recbole_overrides(tandem_config: dict[str, Any], batch_size: int, seed: int) -> dict[str, Any]:
    """RecBole settings with the architecture and learning rate of a Tandem SASRec run (`TrainConfig` as saved;
    `tools.data.export.recbole_sasrec`); RecBole trains until the budget stops it (no early stopping), with
    autocast when the Tandem run used it; how often it validates is the runner's (`recbole_runner.Rounds`).
    """
    model = tandem_config["model"]
    return {
        **recbole_sasrec(model, tandem_config["lr"]), "MAX_ITEM_LIST_LENGTH": int(model.get("max_len", 200)),
        "train_batch_size": batch_size, "eval_batch_size": 1024, "epochs": 100_000, "stopping_step": 100_000,
        "eval_step": 1, "seed": seed, "reproducibility": True,
        "enable_amp": tandem_config.get("precision") == "bf16",  # autocast as Tandem's run (bf16 on a CPU)
    }  # fmt: skip


def run_recbole(python: Path, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """Run the runner in the scratch environment with a progress bar over the budget; its result JSON."""
    spec_file = Path(spec["workdir"]) / "spec.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec, indent=1))
    out = Path(spec["out"])
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    with open(log, "wb") as sink:
        proc = subprocess.Popen([str(python), str(RUNNER), str(spec_file)], stdout=sink, stderr=subprocess.STDOUT,
                                env=env)  # fmt: skip
        columns = (TextColumn("[bold]RecBole SASRec"), BarColumn(),
                   TextColumn("{task.completed:.0f}/{task.total:.0f} s"), TimeElapsedColumn())  # fmt: skip
        with Progress(*columns) as bar:
            task = bar.add_task("recbole", total=spec["budget_s"])
            started = time.monotonic()
            while proc.poll() is None:
                bar.update(task, completed=min(spec["budget_s"], time.monotonic() - started))
                time.sleep(2)
    if proc.returncode != 0 or not out.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise TandemError(f"RecBole run failed (exit {proc.returncode}): {tail[0]}; full log: {log}")
    return json.loads(out.read_text())


def run(data: str, minutes: float, snapshots: tuple[float, ...], batch_size: int, tandem_label: str | None,
        out: Path, threads: int | None, validate_every_s: float = 120.0) -> dict[str, Any]:  # fmt: skip
    settings = Settings()
    label, tandem = tandem_side(RESULTS_DIR / f"sasrec_{data}.json", tandem_label)
    dataset = load(data, settings.data_dir)
    splits = leave_one_out(dataset, seed=settings.seed, max_len=settings.max_seq_len,
                           fewshot_fraction=settings.fewshot_fraction)  # fmt: skip
    root = settings.home / "scratch" / "recbole-1.2.1"
    python = ensure_recbole_env(root)
    export = export_recbole(dataset, splits, root / "export", seed=settings.seed)
    budget = minutes * 60
    moments = sorted({*(m * 60 for m in snapshots if m * 60 < budget), budget})
    spec = {"config_file": str(export.config), "overrides": recbole_overrides(tandem["config"], batch_size,
            settings.seed), "budget_s": budget, "snapshots_s": moments, "validate_every_s": validate_every_s,
            "threads": threads or tandem_threads(tandem),
            "out": str(root / "result.json"), "workdir": str(root / "work")}  # fmt: skip
    load_start = os.getloadavg()
    recbole = run_recbole(python, spec, root / "runner.log")
    recbole["time_to_accuracy"] = time_to_accuracy(recbole["curve"])
    recbole["loadavg_start"] = [round(v, 2) for v in load_start]
    recbole["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    recbole["overrides"] = spec["overrides"]
    results = {
        "data": data,
        "fingerprint": dataset.fingerprint(),
        "protocol": "Tandem's leave-one-out split exported to RecBole atomic files (`tandem data export --format "
        "recbole`); validation and test by full ranking with the user's history masked; each side's own evaluator "
        "(RecBole's for RecBole); time-to-accuracy = first wall-clock second of validation HR@10 >= threshold, "
        "on this machine, the two runs one after the other",
        "thresholds": list(THRESHOLDS),
        "command": f"python -m evals.bench_recbole --data {data} --minutes {minutes:g} --tandem-run {label} "
        f"--batch-size {batch_size} --validate-every {validate_every_s:g}",
        "export": {"users": export.users, "interactions": export.interactions, "items": export.items},
        "recbole": recbole,
        "tandem": {"run": label, "command": tandem["command"], "config": tandem["config"],
                   "seconds_per_epoch": tandem["seconds_per_epoch"], "epochs": tandem["epochs"],
                   "time_to_accuracy": time_to_accuracy(tandem["curve"]), "snapshots": tandem["snapshots"],
                   "test_masked": tandem["test_masked"], "checkpoint_digest": tandem["checkpoint_digest"]},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, tandem["curve"], out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in results["recbole"].items() if k != "curve"}, indent=1))
    return results


def tandem_threads(run: dict[str, Any]) -> int:
    """The torch threads the Tandem run used (from its machine line), so both sides get the same cores."""
    machine = run.get("machine", "")
    marker = " torch threads"
    if marker in machine:
        return int(machine.split(marker)[0].rsplit(",", 1)[-1].strip())
    return len(os.sched_getaffinity(0))


def plot(results: dict[str, Any], tandem_curve: list[dict[str, float]], path: Path) -> Path:
    """Both validation curves against wall-clock minutes."""
    curves = {f"RecBole 1.2.1 SASRec (batch {results['recbole']['config']['train_batch_size']})":
              results["recbole"]["curve"], f"Tandem {results['tandem']['run']}": tandem_curve}  # fmt: skip
    return plot_training_curves(curves, path, f"SASRec on {results['data']}, the same split and machine: "
                                "validation (history masked, full ranking) vs wall-clock minutes",
                                targets=TARGETS, xlabel="wall-clock minutes")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="ml-1m", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--minutes", type=float, default=20.0, help="RecBole's wall-clock training budget")
    parser.add_argument("--snapshots", default="10,20", help="minutes at which to test the best checkpoint so far")
    parser.add_argument("--batch-size", type=int, default=2048, help="RecBole's train_batch_size (its default)")
    parser.add_argument("--tandem-run", default=None, help="label of the Tandem run in sasrec_<data>.json "
                        "(default: the best on validation)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the Tandem run's)")
    parser.add_argument("--validate-every", type=float, default=120.0, help="seconds of RecBole training between "
                        "validations (an ML-1M epoch outlasts the budget on 2 cores)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    snapshots = tuple(float(m) for m in args.snapshots.split(",") if m.strip())
    out = args.out or RESULTS_DIR / f"recbole_{args.data}.json"
    try:
        run(args.data, args.minutes, snapshots, args.batch_size, args.tandem_run, out, args.threads,
            args.validate_every)
    except TandemError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()

"""Train RecBole's SASRec on an exported split for a wall-clock budget; run by `evals.bench_recbole` inside
the scratch environment that holds RecBole 1.2.1 (never the project's own: this file imports nothing from
Tandem, only RecBole, PyTorch and the standard library).

    <scratch venv>/bin/python evals/recbole_runner.py SPEC.json

SPEC.json: {"config_file": the export's YAML, "overrides": RecBole settings on top, "budget_s": seconds,
"snapshots_s": [seconds, ...], "validate_every_s": seconds of training between validations (`Rounds`),
"threads": N, "out": result JSON, "workdir": folder for RecBole's logs and checkpoints}. The result holds
the validation curve (per validation: HR@10 / NDCG@10, epochs trained so far, mean training loss of the
round, seconds on the wall clock since training started), the best epoch, and the test metrics of the best
checkpoint at the end and of the best checkpoint known at each snapshot moment (what a shorter budget would
have kept), all from RecBole's own full-ranking evaluator (the user's history masked).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path


class BudgetSpent(Exception):
    """Raised between epochs once the wall-clock budget is used up."""


class Rounds:
    """RecBole's training data as rounds of at most `every_s` seconds, each followed by RecBole's validation.

    RecBole validates once per epoch, and on 2 CPU cores one epoch of ML-1M (a sample per prefix, each padded to
    the full history length) takes longer than the budgets compared; so each of RecBole's "epochs" here is a
    round that takes the next batches of the SAME pass over the data (one iterator, reshuffled only when a pass
    ends, as RecBole does), until `every_s` seconds pass, a pass ends or the wall clock reaches `deadline`.
    The training itself is unchanged; only validation is more frequent. Other attributes are the loader's.
    """

    def __init__(self, loader, deadline: float, every_s: float) -> None:
        self.loader, self.deadline, self.every_s = loader, deadline, every_s
        self.iterator = None
        self.samples = 0  # samples trained on so far, over all rounds
        self.batches = 0  # batches of the current round

    def __iter__(self):
        self.batches, started = 0, time.perf_counter()
        while True:
            now = time.perf_counter()
            if now > self.deadline or (self.batches and now - started > self.every_s):
                return
            if self.iterator is None:
                self.iterator = iter(self.loader)
            try:
                batch = next(self.iterator)
            except StopIteration:  # a pass over the data ended: so does the round
                self.iterator = None
                if self.batches:
                    return
                continue
            self.batches += 1
            self.samples += len(batch)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        return getattr(self.loader, name)


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)  # RecBole writes log/, log_tensorboard/ and saved/ under the working directory

    import torch

    torch.set_num_threads(int(spec["threads"]))
    real_load = torch.load

    def load_full(*args, **kwargs):  # RecBole 1.2.1 pickles its config into checkpoints it wrote itself
        kwargs.setdefault("weights_only", False)
        return real_load(*args, **kwargs)

    torch.load = load_full

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    overrides = {"checkpoint_dir": str(workdir / "saved"), "show_progress": False, "use_gpu": False,
                 **spec["overrides"]}  # fmt: skip
    config = Config(model="SASRec", config_file_list=[spec["config_file"]], config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    prepared = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    prepare_s = time.perf_counter() - prepared

    budget, moments = float(spec["budget_s"]), sorted(float(m) for m in spec.get("snapshots_s", []))
    curve: list[dict[str, float]] = []
    snapshots: dict[float, dict[str, float]] = {}

    epoch_samples = len(train_data.dataset)

    class BudgetTrainer(Trainer):
        """RecBole's trainer in validation rounds (`Rounds`), stopped when the budget is spent; records each
        validation with the epochs trained so far (a fraction: samples seen / samples per epoch)."""

        started = 0.0
        rounds: Rounds | None = None

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            if time.perf_counter() - self.started > budget:
                raise BudgetSpent
            if self.rounds is None:
                self.rounds = Rounds(train_data, self.started + budget, float(spec.get("validate_every_s", 120)))
            return super()._train_epoch(self.rounds, epoch_idx, loss_func, show_progress)

        def _valid_epoch(self, valid_data, show_progress=False):
            score, result = super()._valid_epoch(valid_data, show_progress)
            done = self.rounds
            total = self.train_loss_dict.get(len(curve), float("nan"))  # RecBole sums the batches' mean losses
            curve.append({"epoch": round(done.samples / epoch_samples, 3), "loss": float(total) / max(1, done.batches),
                          "HR@10": float(result["hit@10"]), "NDCG@10": float(result["ndcg@10"]),
                          "elapsed": time.perf_counter() - self.started, "samples": done.samples})  # fmt: skip
            return score, result

    trainer = BudgetTrainer(config, model)

    def after_validation(epoch_idx: int, valid_score: float) -> None:
        elapsed = curve[-1]["elapsed"]
        for moment in moments:  # keep the best checkpoint known when `moment` passed
            if moment not in snapshots and elapsed > moment and Path(trainer.saved_model_file).is_file():
                kept = workdir / f"snapshot-{moment:g}s.pth"
                shutil.copyfile(trainer.saved_model_file, kept)
                snapshots[moment] = {"file": str(kept), "best_epoch": _best_epoch(curve, elapsed)}

    trainer.started = time.perf_counter()
    stopped_by = "epochs"
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False, callback_fn=after_validation)
        stopped_by = "early stopping"
    except BudgetSpent:
        stopped_by = "time budget"
    train_s = time.perf_counter() - trainer.started
    for moment in moments:  # the run ended before `moment`: its final choice is what it had then
        if moment not in snapshots:
            snapshots[moment] = {"file": trainer.saved_model_file, "best_epoch": _best_epoch(curve, train_s)}
    test = _metrics(trainer.evaluate(test_data, load_best_model=True, show_progress=False))
    cuts = {}
    for moment, snap in sorted(snapshots.items()):
        result = trainer.evaluate(test_data, load_best_model=True, model_file=snap["file"], show_progress=False)
        cuts[f"{moment / 60:g} min"] = {"best_epoch": snap["best_epoch"], "test_masked": _metrics(result)}
    out = {
        "recbole": _version("recbole"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": {k: _plain(config[k]) for k in ("MAX_ITEM_LIST_LENGTH", "hidden_size", "inner_size", "n_layers",
                                                   "n_heads", "hidden_dropout_prob", "attn_dropout_prob",
                                                   "hidden_act", "loss_type", "learning_rate", "train_batch_size",
                                                   "enable_amp", "seed")},  # fmt: skip
        "items": int(dataset.item_num),
        "users": int(dataset.user_num),
        "training_samples": epoch_samples,
        "prepare_seconds": round(prepare_s, 1),
        "train_seconds": round(train_s, 1),
        "stopped_by": stopped_by,
        "best_epoch": _best_epoch(curve, train_s),
        "test_masked": test,
        "snapshots": cuts,
        "curve": curve,
    }
    Path(spec["out"]).write_text(json.dumps(out, indent=1) + "\n")


def _best_epoch(curve: list[dict[str, float]], until: float) -> float:
    """The epoch (fractional: epochs trained when validated) with the best validation NDCG@10 among the
    validations done by `until` seconds (0 if none)."""
    done = [row for row in curve if row["elapsed"] <= until + 1e-9]
    return max(done, key=lambda row: row["NDCG@10"])["epoch"] if done else 0


def _metrics(result) -> dict[str, float]:
    return {"HR@10": round(float(result["hit@10"]), 4), "NDCG@10": round(float(result["ndcg@10"]), 4)}


def _plain(value):
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main(sys.argv[1])

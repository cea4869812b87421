"""Train RecBole's SASRec on an exported split for a wall-clock budget; run by `evals.bench_recbole` inside
the scratch environment that holds RecBole 1.2.1 (never the project's own: this file imports nothing from
Tandem, only RecBole, PyTorch and the standard library).

    <scratch venv>/bin/python evals/recbole_runner.py SPEC.json

SPEC.json: {"config_file": the export's YAML, "overrides": RecBole settings on top, "budget_s": seconds,
"snapshots_s": [seconds, ...], "threads": N, "out": result JSON, "workdir": folder for RecBole's logs and
checkpoints}. The result holds the validation curve (each epoch's HR@10 / NDCG@10, training loss, seconds on
the wall clock since training started), the best epoch, and the test metrics of the best checkpoint at the end
and of the best checkpoint known at each snapshot moment (what a shorter budget would have kept), all from
RecBole's own full-ranking evaluator (the user's history masked).
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


class Budgeted:
    """RecBole's training data loader, cut short when the wall clock passes `deadline`: the epoch then ends
    early and is validated, as Tandem's trainer does with a budget (other attributes are the loader's)."""

    def __init__(self, loader, deadline: float) -> None:
        self.loader, self.deadline = loader, deadline

    def __iter__(self):
        for batch in self.loader:
            if time.perf_counter() > self.deadline:
                return
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

    class BudgetTrainer(Trainer):
        """RecBole's trainer, stopped between epochs when the budget is spent; records each validation."""

        started = 0.0

        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            if time.perf_counter() - self.started > budget:
                raise BudgetSpent
            return super()._train_epoch(Budgeted(train_data, self.started + budget), epoch_idx, loss_func,
                                        show_progress)  # fmt: skip

        def _valid_epoch(self, valid_data, show_progress=False):
            score, result = super()._valid_epoch(valid_data, show_progress)
            epoch = len(curve) + 1
            loss = self.train_loss_dict.get(epoch - 1, float("nan"))
            elapsed = time.perf_counter() - self.started
            curve.append({"epoch": epoch, "loss": float(loss), "HR@10": float(result["hit@10"]),
                          "NDCG@10": float(result["ndcg@10"]), "elapsed": elapsed})  # fmt: skip
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
        "training_samples": len(train_data.dataset),
        "prepare_seconds": round(prepare_s, 1),
        "train_seconds": round(train_s, 1),
        "stopped_by": stopped_by,
        "best_epoch": _best_epoch(curve, train_s),
        "test_masked": test,
        "snapshots": cuts,
        "curve": curve,
    }
    Path(spec["out"]).write_text(json.dumps(out, indent=1) + "\n")


def _best_epoch(curve: list[dict[str, float]], until: float) -> int:
    """The epoch with the best validation NDCG@10 among those finished by `until` seconds (0 if none)."""
    done = [row for row in curve if row["elapsed"] <= until + 1e-9]
    return int(max(done, key=lambda row: row["NDCG@10"])["epoch"]) if done else 0


def _metrics(result) -> dict[str, float]:
    return {"HR@10": round(float(result["hit@10"]), 4), "NDCG@10": round(float(result["ndcg@10"]), 4)}


def _plain(value):
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main(sys.argv[1])

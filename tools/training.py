"""Training of the device encoders: CDA4Rec Eq. 10 (or full softmax CE), early stopping, checkpoints.

- The loss is a strategy object chosen once (`make_objective`): `BPRLoss` is the sampled-negative loss of
  CDA4Rec Eq. 10, `SoftmaxCE` the full softmax cross-entropy over all items; with `mask_history` the items a
  position has already read leave its softmax (Tandem never recommends a seen item, and `eval rec` masks
  them, so the loss ranks the same candidates the product does).
- The learning rate follows `schedule`: constant, or linear warm-up then cosine decay over the run, where the
  run is the time budget when one is set (so a budgeted run always ends annealed) and the epochs otherwise.
- `precision="bf16"` runs forward and loss under CPU/CUDA autocast (bfloat16 matrix products, float32
  weights and optimiser); `device` and `threads` come from `tools.compute`.
- Per-position models (SASRec, Caser) learn from every position of each training sequence; SURGE from
  `samples_per_user` random cut points per user and epoch. Batches group sequences of similar length.
- Validation NDCG@10 (full ranking; the user's seen items masked when `valid_mask_seen`) picks the best epoch;
  training stops after `patience` epochs without improvement. Everything is seeded. Each epoch's row of the
  validation curve records the wall-clock seconds since the start, and `snapshot_s` keeps the best weights
  known at those moments (what a shorter budget would have saved).
- The best epoch is saved with `tools.checkpoints.save_checkpoint` (weights, configs with the recipe name,
  validation metrics and curve, data fingerprint); `init_from` continues from such a checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor

from ground.errors import TandemError
from tools.checkpoints import CheckpointError, load_encoder, save_checkpoint
from tools.compute import configure_torch
from tools.data import Dataset, Splits
from tools.encoders import ENCODERS, SequentialEncoder, build_encoder
from tools.metrics import evaluate

LossName = Literal["bpr", "ce"]
EncoderName = Literal["sasrec", "surge", "caser"]
Schedule = Literal["constant", "cosine"]
Precision = Literal["fp32", "bf16"]
BudgetClock = Literal["wall", "cpu"]


# -- objectives ------------------------------------------------------------------------------------------
def bpr_loss(user: Tensor, positives: Tensor, negatives: Tensor, items: Tensor) -> Tensor:
    """CDA4Rec Eq. 10: mean over positives of -sum_j log sigma(y_i - y_j), y = user . e_item.

    user [N, d], positives [N], negatives [N, K] (item ids, however they were sampled), items [V + 1, d].
    """
    y_pos, y_neg = pair_scores(user, positives, negatives, items)
    return -F.logsigmoid(y_pos - y_neg).sum(1).mean()


def pair_scores(user: Tensor, positives: Tensor, negatives: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """y = user . e_item of each positive [N, 1] and of its sampled negatives [N, K] (the scores the sampled
    losses compare)."""
    y_pos = (user * items[positives]).sum(-1, keepdim=True)  # [N, 1]
    y_neg = torch.einsum("nd,nkd->nk", user, items[negatives])  # [N, K]
    return y_pos, y_neg


def uniform_negatives(positives: Tensor, num_items: int, k: int) -> Tensor:
    """[N, K] item ids drawn uniformly from all items except each positive itself.

    Other seen items are not excluded: with thousands of items the collision rate is small and exclusion would
    cost a per-user lookup.
    """
    neg = torch.randint(1, num_items + 1, (len(positives), k), device=positives.device)  # [N, K]
    clash = neg == positives.unsqueeze(1)
    return torch.where(clash, neg % num_items + 1, neg)  # shift a clash to the next id


@dataclass(frozen=True)
class BPRLoss:
    """CDA4Rec Eq. 10 (`bpr_loss`) with `negatives` uniformly sampled items per positive."""

    negatives: int = 1
    name: str = "bpr"
    excludes_history: bool = False

    def __call__(self, user: Tensor, positives: Tensor, items: Tensor, exclude: Tensor | None = None) -> Tensor:
        neg = uniform_negatives(positives, items.shape[0] - 1, self.negatives)
        return bpr_loss(user, positives, neg, items)


@dataclass(frozen=True)
class SoftmaxCE:
    """Full softmax cross-entropy of the positive against every item (the padding row excluded).

    With `excludes_history`, `exclude` [N, V + 1] removes the items each output has already read from its
    softmax (the target is never excluded): the cross-entropy over the candidates a history-masked ranking
    actually orders.
    """

    name: str = "ce"
    excludes_history: bool = False

    def __call__(self, user: Tensor, positives: Tensor, items: Tensor, exclude: Tensor | None = None) -> Tensor:
        logits = (user @ items[1:].T).float()  # [N, V]
        if exclude is not None:
            logits = logits.masked_fill(exclude[:, 1:], float("-inf"))
        return F.cross_entropy(logits, positives - 1)


def make_objective(loss: LossName, negatives: int = 1, mask_history: bool = False) -> BPRLoss | SoftmaxCE:
    """The loss strategy, chosen once per run."""
    if loss == "bpr":
        return BPRLoss(negatives)
    if loss == "ce":
        return SoftmaxCE(excludes_history=mask_history)
    raise TandemError(f"unknown loss {loss!r}; choose bpr or ce")


# -- configuration and result -----------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in the checkpoint)."""

    encoder: EncoderName = "sasrec"
    loss: LossName = "ce"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    negatives: int = 1
    patience: int = 5
    samples_per_user: int = 4
    seed: int = 42
    threads: int | None = None  # None: every core this process may use (`tools.compute.machine_threads`)
    device: str = "auto"  # auto | cpu | cuda
    max_valid: int | None = None
    max_steps_per_epoch: int | None = None
    time_budget_s: float | None = None
    semantic_init: bool = True
    mask_history: bool = False
    valid_mask_seen: bool = False
    schedule: Schedule = "constant"
    warmup_steps: int = 0
    precision: Precision = "fp32"
    snapshot_s: tuple[float, ...] = ()
    budget_clock: BudgetClock = "wall"  # what time_budget_s and snapshot_s count: wall or cpu (`_budget_clock`)
    recipe: str | None = None
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    model: SequentialEncoder
    best_valid: dict[str, float]
    best_epoch: int
    epochs_run: int
    seconds_per_epoch: float
    history: list[dict[str, float]]
    checkpoint: Path | None
    stopped_by: str = "epochs"
    snapshots: dict[float, dict[str, Any]] = field(default_factory=dict)  # seconds -> {state, epoch, valid}
    device: str = "cpu"
    threads: int = 1


# -- batches -----------------------------------------------------------------------------------------------
def _length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (buckets of 16, shuffled within and across)."""
    order = np.lexsort((rng.random(len(lengths)), lengths // 16))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def training_batches(
    model: SequentialEncoder, train: dict[int, np.ndarray], config: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs [B, L], targets [B, T]) for one epoch; T = L for per-position models, else 1."""
    seqs = [np.asarray(s, dtype=np.int64) for s in train.values() if len(s) >= 2]
    if model.per_position:
        inputs = [s[:-1][-model.max_len :] for s in seqs]
        targets = [s[1:][-model.max_len :] for s in seqs]
    else:
        inputs, targets = [], []
        for s in seqs:
            for cut in rng.integers(1, len(s), size=config.samples_per_user):
                inputs.append(s[max(0, cut - model.max_len) : cut])
                targets.append(s[cut : cut + 1])
    lengths = np.array([len(x) for x in inputs])
    for batch in _length_batches(lengths, config.batch_size, rng):
        width = int(lengths[batch].max())
        x = np.zeros((len(batch), width), dtype=np.int64)
        y = np.zeros((len(batch), width if model.per_position else 1), dtype=np.int64)
        for row, i in enumerate(batch):
            x[row, width - len(inputs[i]) :] = inputs[i]
            y[row, y.shape[1] - len(targets[i]) :] = targets[i]
        yield torch.from_numpy(x), torch.from_numpy(y)


# -- training ----------------------------------------------------------------------------------------------
EpochCallback = Callable[[dict[str, float]], None]


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """The rate at optimiser `step` when `progress` (0..1) of the run is done: linear warm-up over
    `warmup_steps`, then constant or cosine decay to zero at the end of the run."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "constant":
        return config.lr * warm
    return config.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


def train_encoder(
    dataset: Dataset,
    splits: Splits,
    config: TrainConfig,
    item_table: np.ndarray | None = None,
    checkpoint: Path | None = None,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    init_from: Path | None = None,
) -> TrainResult:
    """Train `config.encoder` on `splits.train` with CDA4Rec Eq. 10 (or CE); keep the best validation epoch.

    `init_from` continues from a checkpoint of the same encoder and data (its model config wins over
    `config.model`; the optimiser starts afresh).
    """
    if config.encoder not in ENCODERS:
        raise TandemError(f"unknown encoder {config.encoder!r}; choose one of {', '.join(ENCODERS)}")
    device = configure_torch(config.device, config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    table = item_table if config.semantic_init else None
    if init_from is not None:
        model = load_encoder(init_from, dataset)
        if model.name != config.encoder:
            raise CheckpointError(f"{init_from} holds a {model.name} encoder, not {config.encoder}")
    else:
        model = build_encoder(config.encoder, dataset.catalog.num_items, item_table=table, **config.model)
    model.to(device)
    objective = make_objective(config.loss, config.negatives, config.mask_history)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    valid = splits.valid[: config.max_valid] if config.max_valid else splits.valid

    def validate() -> dict[str, float]:
        return evaluate(model, valid, mask_seen=config.valid_mask_seen).metrics

    best_state, best_valid, best_epoch, stale = weights_snapshot(model), {}, 0, 0
    if init_from is not None:  # the checkpoint is the epoch to beat
        best_valid = validate()
    history: list[dict[str, float]] = []
    snapshots: dict[float, dict[str, Any]] = {}
    stopped_by = "epochs"
    clock = _budget_clock(config.budget_clock, torch.get_num_threads())
    started, wall_started = clock(), time.perf_counter()
    train_seconds, step = 0.0, 0
    steps_per_epoch = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    def run_progress() -> float:
        if config.time_budget_s:
            return (clock() - started) / config.time_budget_s
        return step / max(1, steps_per_epoch * config.epochs)

    with _progress(progress) as bar:
        task = bar.add_task("training", total=None, loss=float("nan"), valid="") if bar else None
        for epoch in range(1, config.epochs + 1):
            model.train()
            epoch_start, losses = time.perf_counter(), []
            batches = list(training_batches(model, splits.train, config, rng))
            if config.max_steps_per_epoch:
                batches = batches[: config.max_steps_per_epoch]
            steps_per_epoch = steps_per_epoch or len(batches)
            if bar is not None:
                bar.reset(task, total=len(batches), description=f"{config.encoder} epoch {epoch}")
            for inputs, targets in batches:
                if config.time_budget_s is not None and clock() - started > config.time_budget_s:
                    break  # out of time: evaluate what we have
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step, run_progress())
                with autocast:
                    loss = model.calculate_loss(inputs.to(device), targets.to(device), objective)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                with torch.no_grad():
                    model.item_emb.weight[0].zero_()
                losses.append(loss.item())
                if bar is not None:
                    bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
            train_seconds += time.perf_counter() - epoch_start
            metrics = validate()
            elapsed = clock() - started
            row = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), **metrics,
                   "seconds": time.perf_counter() - epoch_start, "elapsed": elapsed,
                   "wall": time.perf_counter() - wall_started,
                   "lr": optimizer.param_groups[0]["lr"]}  # fmt: skip
            history.append(row)
            for moment in config.snapshot_s:  # the best weights known when `moment` passed
                if moment not in snapshots and elapsed > moment and best_epoch:
                    snapshots[moment] = {"state": best_state, "epoch": best_epoch, "valid": best_valid}
            if bar is not None:
                shown = f"val HR@10 {metrics['HR@10']:.4f} NDCG@10 {metrics['NDCG@10']:.4f}"
                bar.update(task, valid=shown)
                bar.console.log(f"epoch {epoch}: loss {row['loss']:.4f}  {shown}  ({elapsed:.0f} s)")
            if on_epoch is not None:
                on_epoch(row)
            if metrics["NDCG@10"] > best_valid.get("NDCG@10", -1.0):
                best_state, best_valid, best_epoch, stale = weights_snapshot(model), metrics, epoch, 0
            else:
                stale += 1
            out_of_time = config.time_budget_s is not None and clock() - started > config.time_budget_s
            if stale >= config.patience or out_of_time:
                stopped_by = "early stopping" if stale >= config.patience else "time budget"
                break
    for moment in config.snapshot_s:  # the run ended before `moment`: its final choice is what it had then
        snapshots.setdefault(moment, {"state": best_state, "epoch": best_epoch, "valid": best_valid})
    model.load_state_dict(best_state)
    model.eval()
    result = TrainResult(model, best_valid, best_epoch, len(history), train_seconds / max(1, len(history)),
                         history, checkpoint, stopped_by, snapshots, str(device), torch.get_num_threads())  # fmt: skip
    if checkpoint is not None:
        save_checkpoint(checkpoint, model, dataset, config, result)
    return result


def _budget_clock(kind: BudgetClock, threads: int) -> Callable[[], float]:
    """Seconds for the time budget, the schedule and the snapshots. "wall": the wall clock. "cpu": this process's
    CPU seconds divided by its threads, i.e. the wall-clock time the same work takes when the threads have the
    cores to themselves, so a budget means the same on a loaded machine (set OMP_WAIT_POLICY=PASSIVE there, or
    OpenMP's spinning counts as work)."""
    if kind == "wall":
        return time.perf_counter
    if kind == "cpu":
        return lambda: time.process_time() / threads
    raise TandemError(f"unknown budget clock {kind!r}; choose wall or cpu")


def weights_snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the weights (a snapshot that later steps do not change)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


def _progress(enabled: bool):
    if not enabled:
        return nullcontext(None)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[valid]}"), TimeElapsedColumn(),
    )  # fmt: skip

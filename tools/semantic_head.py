"""A learned semantic tower: the cloud's map from a behaviour summary's text embedding into the item space
(CDA4Rec Eq. 2, trained with Eq. 10).

Untrained, Eq. 2 projects AVG(Theta(b)) with the PCA that made the item table (Eq. 1): a summary lands next to
the items whose texts read like it, which says little about what the user watches next. The head keeps the
item table E_I fixed (so the tag index of Eq. 3 serves it unchanged) and learns where a summary should land:

    e_sem(b) = W Theta(b) + c + MLP(Theta(b)),    scored as e_sem(b) . e_i (Eq. 3, 7)

with W, c initialised to the PCA (the head starts exactly where the untrained Eq. 2 is) and the MLP's output
layer initialised to zero. It is trained on the abstracts of training users (the only thing the cloud sees),
the next item as the target, by BPR with sampled negatives (CDA4Rec Eq. 10) or by full softmax cross-entropy
with the user's seen items masked (`tools.training.make_objective`, the objectives the encoders use).
Validation NDCG@10 (full ranking, seen items masked) picks the best epoch; the run stops after `patience`
epochs without improvement or when the time budget is spent. Everything is seeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from ground.errors import TandemError
from tools.checkpoints import load_payload, save_payload
from tools.data import Dataset, EvalInstance, Splits
from tools.embeddings import PCA
from tools.metrics import metrics_from_ranks, seen_mask, target_ranks
from tools.training import LossName, make_objective, weights_snapshot

HEAD_FORMAT = 2  # 2: with the output scale of `SummaryHead.calibrate_scale`
CUTS_PER_USER = 8  # training summaries per user: the last training position and up to 7 more drawn (seeded)


class HeadError(TandemError):
    """A semantic head checkpoint that is missing, unreadable, or made for other item semantics."""


HEAD_GLOB = "semantic-head-*.pt"


def space_key(semantics_key: str, head_digest: str | None, precision: str = "fp32") -> str:
    """What the cloud's e_sem depends on: the item semantics, the head's digest when summaries go through one, and
    the request-time text encoder's precision when it is not float32 (the key of the text space, and of the models
    fitted to e_sem)."""
    key = semantics_key if head_digest is None else f"{semantics_key}+head-{head_digest[:12]}"
    return key if precision == "fp32" else f"{key}+{precision}"


def head_path(models_dir: Path, semantics_key: str) -> Path:
    """Where the trained semantic head for these item semantics (data set + text encoder + d) lives."""
    return Path(models_dir) / f"semantic-head-{semantics_key}.pt"


class SummaryHead(nn.Module):
    """Theta(b) [N, D] -> e_sem [N, d]: the PCA of Eq. 1 as a linear layer plus a residual MLP (zero at init)."""

    def __init__(self, text_dim: int, item_dim: int, hidden: int) -> None:
        super().__init__()
        self.text_dim, self.item_dim, self.hidden = text_dim, item_dim, hidden
        self.linear = nn.Linear(text_dim, item_dim)
        self.residual = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, item_dim)) \
            if hidden else None
        if self.residual is not None:
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)
        self.register_buffer("scale", torch.ones(()))  # applied by `project` (`calibrate_scale`)

    @classmethod
    def from_pca(cls, pca: PCA, hidden: int) -> SummaryHead:
        """A head that starts as the untrained Eq. 2: x -> (x - mean) @ components.T."""
        head = cls(pca.components.shape[1], pca.components.shape[0], hidden)
        with torch.no_grad():
            components = torch.from_numpy(np.asarray(pca.components, dtype=np.float32))
            head.linear.weight.copy_(components)
            head.linear.bias.copy_(-(components @ torch.from_numpy(np.asarray(pca.mean, dtype=np.float32))))
        return head

    def forward(self, x: Tensor) -> Tensor:
        out = self.linear(x)
        return out if self.residual is None else out + self.residual(x)

    def project(self, raw: np.ndarray) -> np.ndarray:
        """Text embeddings [N, D] -> item-space vectors [N, d] at the PCA's scale (numpy in, numpy out)."""
        with torch.no_grad():
            return (self(torch.from_numpy(np.asarray(raw, dtype=np.float32))) * self.scale).numpy()

    def calibrate_scale(self, raw: np.ndarray, pca: PCA) -> float:
        """Set `scale` so that projected summaries have the mean norm the PCA gives them.

        Training sharpens the softmax by growing e_sem (about 27x on ML-1M); Eq. 2 then adds alpha * P(query) to
        (1 - alpha) * H(summary), and a summary 27x longer than the query would drown the query's intent. The
        scale restores the balance alpha was set for; it changes no ranking by the head alone."""
        with torch.no_grad():
            mapped = self(torch.from_numpy(np.asarray(raw, dtype=np.float32))).norm(dim=1).mean()
        target = float(np.linalg.norm(pca.transform(raw), axis=1).mean())
        self.scale.fill_(target / max(float(mapped), 1e-12))
        return float(self.scale)


@dataclass
class HeadConfig:
    """Everything that decides a head's training run (saved with it)."""

    loss: LossName = "ce"
    hidden: int = 256
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    negatives: int = 16  # BPR's sampled negatives per positive (Eq. 10)
    patience: int = 5
    minutes: float | None = None
    seed: int = 42


@dataclass(frozen=True)
class SummaryCase:
    """A history (oldest first, with its timestamps) and the item that came next."""

    history: np.ndarray
    timestamps: np.ndarray
    target: int


def training_cases(dataset: Dataset, splits: Splits, per_user: int, seed: int) -> list[SummaryCase]:
    """Cut points in the training users' training sequences (never a validation or test item): each user's last
    training position and up to `per_user - 1` more drawn uniformly (seeded); histories keep the newest
    `splits.max_len` items."""
    rng = np.random.default_rng(seed)
    cases = []
    for user, sequence in sorted(splits.train.items()):
        if len(sequence) < 2:
            continue
        stamps = dataset.timestamps[user][: len(sequence)]
        others = np.arange(1, len(sequence) - 1)
        extra = rng.choice(others, size=min(per_user - 1, len(others)), replace=False) if len(others) else others
        for cut in sorted({len(sequence) - 1, *extra.tolist()}):
            start = max(0, cut - splits.max_len)
            cases.append(SummaryCase(sequence[start:cut], stamps[start:cut], int(sequence[cut])))
    return cases


def instance_cases(instances: Sequence[EvalInstance]) -> list[SummaryCase]:
    """Validation or test instances as cases (their history, timestamps and target)."""
    return [SummaryCase(inst.history, inst.history_ts, int(inst.target)) for inst in instances]


@dataclass(frozen=True)
class SummaryExamples:
    """Training or validation pairs: a summary's text embedding, the next item, the items read before it."""

    raw: np.ndarray  # [N, D] Theta(b), L2-normalised
    targets: np.ndarray  # [N] item ids
    seen: list[np.ndarray]  # the items read before the target, masked from its ranking; the newest max_len of
    # them are the history the encoders read (a test example also holds its user's older items: `EvalInstance.masked`)

    def __len__(self) -> int:
        return len(self.targets)


def cached_examples(path: Path, build: Callable[[], SummaryExamples]) -> SummaryExamples:
    """`build()` once: its examples are kept at `path` (npz; the name must carry everything they depend on) and
    read back on later runs, so retraining with another loss does not write every abstract again."""
    path = Path(path)
    if path.is_file():
        with np.load(path) as saved:
            ends = saved["seen_ends"]
            seen = np.split(saved["seen"], ends[:-1]) if len(ends) else []
            return SummaryExamples(saved["raw"], saved["targets"], list(seen))
    examples = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    ends = np.cumsum([len(items) for items in examples.seen]).astype(np.int64)
    flat = np.concatenate(examples.seen).astype(np.int64) if examples.seen else np.zeros(0, np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, raw=examples.raw, targets=examples.targets, seen=flat, seen_ends=ends)
    tmp.replace(path)
    return examples


@dataclass
class HeadResult:
    head: SummaryHead
    config: HeadConfig
    best_valid: dict[str, float]
    best_epoch: int
    initial_valid: dict[str, float]  # the untrained Eq. 2 (the PCA) on the same validation examples
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def head_ranks(head: nn.Module, examples: SummaryExamples, table: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """0-based rank of each example's target by e_sem . e_i over all items, its history masked (`eval rec`'s
    protocol: full ranking, ties count against the target)."""
    items = torch.from_numpy(np.asarray(table, dtype=np.float32))
    ranks = []
    with torch.no_grad():
        for start in range(0, len(examples), chunk):
            part = slice(start, start + chunk)
            scores = head(torch.from_numpy(examples.raw[part])) @ items.T
            mask = seen_mask(examples.seen[part], items.shape[0])
            ranks.append(target_ranks(scores, torch.from_numpy(examples.targets[part]), mask).numpy())
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def evaluate_head(head: nn.Module, examples: SummaryExamples, table: np.ndarray) -> dict[str, float]:
    """HR/NDCG@5/10 of `head_ranks`."""
    return metrics_from_ranks(head_ranks(head, examples, table))


@dataclass
class Fitted:
    """What `fit_user_map` returns: the best validation metrics and epoch, the start's, the curve, the time."""

    best_valid: dict[str, float]
    best_epoch: int
    initial_valid: dict[str, float]
    history: list[dict[str, float]]
    seconds: float


def fit_user_map(model: nn.Module, train: SummaryExamples, valid: SummaryExamples, table: np.ndarray,
                 config: HeadConfig, progress: bool = True, label: str = "semantic head") -> Fitted:  # fmt: skip
    """Fit `model` (an example's `raw` row -> a user vector scored against `table`) to predict each training
    example's next item by the config's loss (Eq. 10 or CE, the user's seen items masked); validation NDCG@10
    (full ranking, seen items masked) picks the epoch, whose weights `model` holds at the end. The caller seeds
    torch before building `model`; the batch order is seeded here. The one training loop of the summary head and
    of the fused tower (`tools.fused_tower`)."""
    rng = np.random.default_rng(config.seed)
    items = torch.from_numpy(np.asarray(table, dtype=np.float32))
    objective = make_objective(config.loss, config.negatives, mask_history=True)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raw, targets = torch.from_numpy(train.raw), torch.from_numpy(train.targets)
    model.eval()
    initial = evaluate_head(model, valid, table)
    best, best_epoch, best_state, history = initial, 0, weights_snapshot(model), []
    start, stale = time.perf_counter(), 0
    deadline = start + 60.0 * config.minutes if config.minutes else None
    with _bar(progress) as bar:
        task = bar.add_task(label, total=config.epochs)
        for epoch in range(1, config.epochs + 1):
            model.train()
            order = rng.permutation(len(train))
            losses = []
            for begin in range(0, len(order), config.batch_size):
                rows = order[begin : begin + config.batch_size]
                exclude = seen_mask([train.seen[r] for r in rows], items.shape[0]) \
                    if getattr(objective, "excludes_history", False) else None
                loss = objective(model(raw[rows]), targets[rows], items, exclude)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            model.eval()
            metrics = evaluate_head(model, valid, table)
            history.append({"epoch": epoch, "loss": float(np.mean(losses)), "elapsed": time.perf_counter() - start,
                            **metrics})  # validation metrics, one row per epoch (`tools.curves` reads these keys)
            bar.update(task, advance=1, description=f"{label}: valid NDCG@10 {metrics['NDCG@10']:.4f}")
            if metrics["NDCG@10"] > best["NDCG@10"]:
                best, best_epoch, best_state, stale = metrics, epoch, weights_snapshot(model), 0
            else:
                stale += 1
            if stale >= config.patience or (deadline is not None and time.perf_counter() >= deadline):
                break
    model.load_state_dict(best_state)
    model.eval()
    return Fitted(best, best_epoch, initial, history, time.perf_counter() - start)


def train_head(
    train: SummaryExamples, valid: SummaryExamples, table: np.ndarray, pca: PCA, config: HeadConfig,
    progress: bool = True,
) -> HeadResult:
    """Fit a `SummaryHead` to predict each training summary's next item (Eq. 10 or CE), best epoch on validation."""
    torch.manual_seed(config.seed)
    head = SummaryHead.from_pca(pca, config.hidden)
    fitted = fit_user_map(head, train, valid, table, config, progress)
    head.calibrate_scale(train.raw, pca)
    return HeadResult(head, config, fitted.best_valid, fitted.best_epoch, fitted.initial_valid, fitted.history,
                      fitted.seconds)  # fmt: skip


def _bar(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled)  # fmt: skip


def save_head(path: Path, result: HeadResult, semantics_key: str, data: dict[str, Any]) -> Path:
    """The head's weights, shape, training config, validation curve and what it was trained on, atomically."""
    head = result.head
    payload = {
        "format": HEAD_FORMAT,
        "semantics_key": semantics_key,
        "shape": {"text_dim": head.text_dim, "item_dim": head.item_dim, "hidden": head.hidden},
        "config": asdict(result.config),
        "best_valid": dict(result.best_valid),
        "initial_valid": dict(result.initial_valid),
        "best_epoch": result.best_epoch,
        "history": list(result.history),
        "seconds": result.seconds,
        "data": dict(data),
        "state_dict": {name: value.detach().cpu() for name, value in head.state_dict().items()},
    }
    return save_payload(path, payload)


def read_head(path: Path, semantics_key: str) -> tuple[SummaryHead, dict[str, Any]]:
    """The head at `path` and its record; HeadError when it is unreadable or made for other item semantics."""
    path = Path(path)
    payload = load_payload(path, HEAD_FORMAT, "semantic head", HeadError, "train one with `tandem train --semantic`")
    if payload["semantics_key"] != semantics_key:
        raise HeadError(f"{path} was trained for item semantics {payload['semantics_key']}, not {semantics_key}")
    head = SummaryHead(**payload["shape"])
    head.load_state_dict(payload["state_dict"])
    head.eval()
    return head, {k: v for k, v in payload.items() if k != "state_dict"}

"""Full-ranking metrics HR@k and NDCG@k (CDA4Rec IV-A), an evaluator and a popularity baseline.

The target is ranked against ALL items of the catalog (never sampled negatives); the padding id 0 is
never a candidate. Ties count against the target (an item scoring exactly as high as the target ranks
above it), so a model that scores everything equally gets nothing. The user's other seen items are
masked only when `mask_seen=True`, and every report says which protocol it used.

With 0-based rank r of the target: HR@k = 1[r < k], NDCG@k = 1[r < k] / log2(r + 2) (one relevant item).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from tools.data import EvalInstance

KS: tuple[int, ...] = (5, 10)


class HistoryScorer(Protocol):
    """Anything that scores every item for a batch of histories: [B] histories -> [B, V + 1]."""

    def score_histories(self, histories: Sequence[np.ndarray]) -> Tensor: ...


def target_ranks(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """0-based rank of each target among all items: scores [B, V + 1], targets [B], mask [B, V + 1] -> [B].

    Column 0 (padding) and masked columns never outrank the target; ties count against it.
    """
    scores = scores.clone().float()
    scores[:, 0] = float("-inf")
    if mask is not None:
        mask = mask.clone()
        mask[torch.arange(len(targets)), targets] = False  # the target itself is never masked
        scores = scores.masked_fill(mask, float("-inf"))
    target_scores = scores.gather(1, targets.view(-1, 1))  # [B, 1]
    at_least = (scores >= target_scores).sum(dim=1)  # [B], includes the target itself
    return at_least - 1


def seen_mask(seen: Sequence[Sequence[int] | np.ndarray], width: int) -> Tensor:
    """[B, width] boolean mask with each row's seen items set: the mask `target_ranks` takes (it unmasks the
    target itself). The one place every evaluation builds the "seen items masked" protocol from."""
    mask = torch.zeros(len(seen), width, dtype=torch.bool)
    for row, items in enumerate(seen):
        mask[row, torch.as_tensor(np.asarray(items, dtype=np.int64))] = True
    return mask


def hit_ratio(ranks: Tensor | np.ndarray, k: int) -> float:
    """HR@k: share of targets ranked in the top k."""
    ranks = torch.as_tensor(ranks)
    return float((ranks < k).float().mean()) if len(ranks) else 0.0


def ndcg(ranks: Tensor | np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: mean of 1 / log2(rank + 2) over targets in the top k."""
    ranks = torch.as_tensor(ranks).double()
    if not len(ranks):
        return 0.0
    gains = torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    return float(gains.mean())


def metrics_from_ranks(ranks: Tensor | np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """{"HR@5": ..., "NDCG@5": ..., "HR@10": ..., "NDCG@10": ...}."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hit_ratio(ranks, k)
        out[f"NDCG@{k}"] = ndcg(ranks, k)
    return out


@dataclass(frozen=True)
class RankingReport:
    """Metrics of one evaluation and the protocol that produced them."""

    metrics: dict[str, float]
    users: int
    num_items: int
    masked_seen: bool
    ranks: np.ndarray = field(repr=False)

    @property
    def protocol(self) -> str:
        seen = "the user's other seen items masked" if self.masked_seen else "seen items NOT masked"
        return f"full ranking of the target against all {self.num_items} items, {seen}, ties count against"

    def line(self) -> str:
        shown = "  ".join(f"{name} {value:.4f}" for name, value in self.metrics.items())
        return f"{shown}  ({self.users} users; {self.protocol})"


def evaluate(
    scorer: HistoryScorer,
    instances: Sequence[EvalInstance],
    *,
    mask_seen: bool = False,
    batch_size: int = 256,
    ks: Sequence[int] = KS,
) -> RankingReport:
    """Rank each instance's target against all items and compute HR@k / NDCG@k (full ranking).

    `mask_seen=True` removes every item the user saw before the target from the ranking (`EvalInstance.masked`:
    the history and anything older than its `max_len` cut). The target is never masked. Instances are scored
    in batches of similar history length (less padding), results are reported in the original order.
    """
    if not instances:
        raise ValueError("no instances to evaluate")
    order = np.argsort([len(inst.history) for inst in instances], kind="stable")
    ranks = np.zeros(len(instances), dtype=np.int64)
    num_items = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = [instances[i] for i in chosen]
            scores = scorer.score_histories([inst.history for inst in batch])  # [B, V + 1]
            num_items = scores.shape[1] - 1
            targets = torch.tensor([inst.target for inst in batch], dtype=torch.long)
            mask = seen_mask([inst.masked for inst in batch], scores.shape[1]) if mask_seen else None
            ranks[chosen] = target_ranks(scores, targets, mask).numpy()
    return RankingReport(metrics_from_ranks(ranks, ks), len(instances), num_items, mask_seen, ranks)


class PopularityScorer:
    """Baseline: every user gets the same ranking, by interaction count in the training sequences."""

    def __init__(self, train: Mapping[int, np.ndarray], num_items: int) -> None:
        counts = np.zeros(num_items + 1, dtype=np.float64)
        for seq in train.values():
            np.add.at(counts, np.asarray(seq, dtype=np.int64), 1.0)
        counts[0] = -np.inf
        self.counts = torch.from_numpy(counts).float()  # [V + 1]

    def score_histories(self, histories: Sequence[np.ndarray]) -> Tensor:
        return self.counts.unsqueeze(0).expand(len(histories), -1).clone()  # [B, V + 1]


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each user's value of `metric` ("HR@10", "NDCG@5", ...) from 0-based ranks: the terms HR@k / NDCG@k average."""
    name, k = metric.split("@")
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks < int(k)
    if name == "HR":
        return hit.astype(np.float64)
    if name == "NDCG":
        return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    raise ValueError(f"unknown metric {metric!r}: HR@k or NDCG@k")


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over paired users with a percentile bootstrap interval."""

    diff: float
    low: float
    high: float
    users: int
    level: float = 0.95

    def text(self) -> str:
        return f"{self.diff:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> PairedDifference:  # fmt: skip
    """Paired bootstrap over users: resample users with replacement (the same users for both methods) and
    take the percentile interval of mean(a - b). `a` and `b` are per-user metric values in the same order."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same users: shapes {a.shape} and {b.shape}")
    if not len(a):
        raise ValueError("no users to compare")
    delta = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    for begin in range(0, samples, 256):  # chunks keep memory at 256 x users
        count = min(256, samples - begin)
        means[begin : begin + count] = delta[rng.integers(0, len(delta), size=(count, len(delta)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return PairedDifference(float(delta.mean()), float(low), float(high), len(delta), level)


def rank_differences(a: np.ndarray, b: np.ndarray, metrics: Sequence[str] = ("HR@10", "NDCG@10")) -> dict[str, str]:
    """Method a minus method b from their per-user 0-based ranks: `paired_bootstrap`'s text for each metric."""
    return {metric: paired_bootstrap(per_user(a, metric), per_user(b, metric)).text() for metric in metrics}

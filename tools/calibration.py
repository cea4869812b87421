"""SCaLRec: is the cached cloud semantic embedding still reliable, and if not, calibrate it on the device.

SCaLRec gives only its abstract, so the two parts are the simplest designs that do what it claims:

Reliability estimate. The cache holds e_sem (CDA4Rec Eq. 2) computed from the first `history_len`
interactions. The newest interactions since then are the evidence: if e_sem still ranks them high among
all items (e_sem . e_i, Eq. 3), the cached semantics still describe the user. The estimate is the mean
percentile rank of the new items under e_sem (1 = each new item scores above every other item, 0.5 =
chance). The cache is reliable when that mean is at least `min_reliability` and there are at most
`max_new` new interactions; no new interaction at all means reliable. `min_reliability` 0.85 is the threshold
`evals.bench_staleness` chose on ML-1M's 5,436 validation users (best balanced accuracy of the verdict against
"the cache ranks the target within 2 percentile points of a fresh e_sem", at a cache written 1, 3, 5 and 10
interactions ago alike: 0.61 / 0.60 / 0.59 / 0.58; `evals/results/staleness_ml-1m.json`); on ML-100K no
threshold reached above 0.54. In the encoder's item space (`tools.encoder_space`, the cloud's behaviour side) the
same benchmark chose 0.95 (`BEHAVIOUR_POLICY`: best balanced accuracy 0.65 / 0.63 / 0.63 at 1 / 3 / 5 interactions
ago, 0.61 at 10 where 0.90 is best; `evals/results/staleness_ml-1m_tower.json`): there the new items rank high under
almost any cached e_sem, so only a higher bar separates good caches from bad ones.

Calibration. When the cloud cannot be asked, a small learned module moves the cached embedding toward
the new evidence: e_cal = e_sem + g * W [e_sem ; m_new], where m_new is the recency-weighted mean of the
new items' semantic embeddings, and the gate g = sigmoid(a . [log(1 + k), r] + b) grows with the number k
of new interactions and falls with the reliability r. It is trained with simulated staleness: on training
sequences, a cache is cut at a random point, k = 1..max_new interactions follow, and the target is the
item after them (softmax cross-entropy over all items, scored in the semantic item space).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


def percentile_ranks(e_sem: np.ndarray, items: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each item in `items`, the share of catalog items that e_sem scores strictly below it."""
    scores = table[1:] @ np.asarray(e_sem, dtype=np.float32)  # [V]
    ordered = np.sort(scores)
    mine = scores[np.asarray(items, dtype=np.int64) - 1]
    return np.searchsorted(ordered, mine, side="left") / max(1, len(scores) - 1)


def recency_mean(items: np.ndarray, table: np.ndarray, half_life: float = 5.0) -> np.ndarray:
    """Recency-weighted mean of the items' embeddings (newest weighs most; weight halves every half_life)."""
    items = np.asarray(items, dtype=np.int64)
    if items.size == 0:
        return np.zeros(table.shape[1], dtype=np.float32)
    age = np.arange(len(items))[::-1]
    weights = 0.5 ** (age / half_life)
    return ((weights[:, None] * table[items]).sum(axis=0) / weights.sum()).astype(np.float32)


@dataclass(frozen=True)
class CacheVerdict:
    reliable: bool
    reliability: float
    new_interactions: int


@dataclass(frozen=True)
class ReliabilityPolicy:
    """SCaLRec reliability decision (see module docstring)."""

    min_reliability: float = 0.85  # chosen on ML-1M validation users (module docstring)
    max_new: int = 10

    def judge(self, e_sem: np.ndarray, new_items: np.ndarray, table: np.ndarray) -> CacheVerdict:
        if len(new_items) == 0:
            return CacheVerdict(True, 1.0, 0)
        score = float(percentile_ranks(e_sem, new_items, table).mean())
        ok = score >= self.min_reliability and len(new_items) <= self.max_new
        return CacheVerdict(ok, score, len(new_items))


BEHAVIOUR_POLICY = ReliabilityPolicy(min_reliability=0.95)  # for e_sem in the encoder's item space (docstring)


class SemanticCalibrator(nn.Module):
    """e_cal = e_sem + g * W [e_sem ; m_new], g = sigmoid(a . [log(1+k), r] + b) (module docstring)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shift = nn.Linear(2 * dim, dim)
        self.gate = nn.Linear(2, 1)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, e_sem: torch.Tensor, m_new: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        # e_sem, m_new: [B, d]; feats: [B, 2] = (log(1 + k), reliability)
        gate = torch.sigmoid(self.gate(feats))  # [B, 1]
        return e_sem + gate * self.shift(torch.cat([e_sem, m_new], dim=-1))  # [B, d]

    def calibrate(self, e_sem: np.ndarray, new_items: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Calibrated embedding for one user (numpy in, numpy out)."""
        reliability = float(percentile_ranks(e_sem, new_items, table).mean()) if len(new_items) else 1.0
        feats = torch.tensor([[np.log1p(len(new_items)), reliability]], dtype=torch.float32)
        with torch.no_grad():
            out = self(
                torch.from_numpy(np.asarray(e_sem, dtype=np.float32))[None],
                torch.from_numpy(recency_mean(new_items, table))[None],
                feats,
            )
        return out[0].numpy()


@dataclass(frozen=True)
class StalenessSample:
    e_sem: np.ndarray
    new_items: np.ndarray
    target: int


def staleness_samples(
    sequences: Sequence[np.ndarray],
    semantic_of: Callable[[list[np.ndarray]], np.ndarray],
    max_new: int = 10,
    per_user: int = 1,
    seed: int = 0,
) -> list[StalenessSample]:
    """Simulated staleness: cache at a random cut, 1..max_new newer items, target = the item after them.

    `semantic_of(histories)` returns the e_sem the cloud would have computed for each history [N, d].
    """
    rng = np.random.default_rng(seed)
    cuts = []
    for seq in sequences:
        for _ in range(per_user):
            if len(seq) < 4:
                continue
            k = int(rng.integers(1, min(max_new, len(seq) - 3) + 1))
            cut = int(rng.integers(2, len(seq) - k))
            cuts.append((seq, cut, k))
    embeddings = semantic_of([seq[:cut] for seq, cut, _ in cuts])
    return [
        StalenessSample(embeddings[n], seq[cut : cut + k], int(seq[cut + k])) for n, (seq, cut, k) in enumerate(cuts)
    ]


def train_calibrator(
    samples: list[StalenessSample], table: np.ndarray, epochs: int = 30, lr: float = 5e-3, seed: int = 0
) -> SemanticCalibrator:
    """Fit the calibrator on simulated-staleness samples (softmax cross-entropy over all items)."""
    torch.manual_seed(seed)
    model = SemanticCalibrator(table.shape[1])
    items = torch.from_numpy(table)  # [V + 1, d]
    e_sem = torch.from_numpy(np.stack([s.e_sem for s in samples]).astype(np.float32))
    m_new = torch.from_numpy(np.stack([recency_mean(s.new_items, table) for s in samples]))
    rel = [float(percentile_ranks(s.e_sem, s.new_items, table).mean()) for s in samples]
    feats = torch.tensor([[np.log1p(len(s.new_items)), r] for s, r in zip(samples, rel, strict=True)])
    targets = torch.tensor([s.target for s in samples])
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scale = 10.0  # temperature: semantic dot products are small
    for _ in range(epochs):
        for batch in torch.randperm(len(samples)).split(256):
            logits = scale * model(e_sem[batch], m_new[batch], feats[batch].float()) @ items.T  # [B, V + 1]
            logits[:, 0] = -1e9
            loss = nn.functional.cross_entropy(logits, targets[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def save_calibrator(model: SemanticCalibrator, path: Path, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state": model.state_dict(), "dim": model.shift.out_features, "key": key}, tmp)
    tmp.replace(path)


def load_calibrator(path: Path, key: str) -> SemanticCalibrator | None:
    """The saved calibrator, or None when absent or trained for other item semantics."""
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("key") != key:
        return None
    model = SemanticCalibrator(int(saved["dim"]))
    model.load_state_dict(saved["state"])
    return model.eval()

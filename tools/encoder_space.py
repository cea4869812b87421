"""The cloud's e_sem in the device encoder's item space: CDA4Rec Eq. 2 learned against the table Eq. 6 scores.

The semantic head (`tools.semantic_head`) keeps e_sem in the PCA'd text space of Eq. 1 so that the text tag index
serves it unchanged; a summary mapped there finds the next item about 1.3 times as often as popularity on ML-1M.
Trained against the device encoder's own item table E_str instead, the same summaries find it about 2.6 times as
often (`evals.bench_fusion`, "semantic alone, encoder item space"). This module is that space:

    e_sem(b) = g(Theta(b))                    (Eq. 2: g an MLP from the summary's text embedding)
    y_i      = e_sem . e_i,  e_i in E_str     (Eq. 3's retrieval and Eq. 7's semantic score)

g is trained on the behaviour summaries of training users (the abstracts the cloud sees), the next item as the
target, by full softmax cross-entropy (or BPR, Eq. 10) with seen items masked, the epoch chosen on validation NDCG@10
(`tools.semantic_head.fit_user_map`, the loop of the head and the fused tower).

It answers abstracts without a query only (`agents.cloud.agent.CloudAgent.side`): a query's words mean something
in the text space, not in E_str. Carrying a query over (the mean E_str row of the k items whose Eq. 1 vectors are
nearest it) was tried and lost to the text space at every k on ML-1M validation users (README).

The tower file holds g and a copy of E_str (item vectors, no user data) with the digest of the encoder checkpoint
it was copied from. Cloud and device read the same file, so both score in one table even after the device retrains
its encoder; the tower is then stale, not wrong (`stale_for`; `tandem train --semantic --space encoder` makes a new
one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ground.errors import TandemError
from tools.checkpoints import load_payload, save_payload
from tools.semantic_head import Fitted, HeadConfig, SummaryExamples, fit_user_map

TOWER_FORMAT = 2  # 2: no output scale (the tower answers abstracts without a query only)
TOWER_GLOB = "semantic-tower-*.pt"  # `tower_path`'s names


class TowerError(TandemError):
    """An encoder-space tower that is missing, unreadable, or made for other item semantics."""


def user_map(text_dim: int, hidden: int, item_dim: int) -> nn.Sequential:
    """g: Theta(b) [N, D] -> [N, d], an MLP whose output layer starts at zero (the map starts at the origin, so
    validation keeps only epochs that learned something). Also the semantic half of `tools.fused_tower`."""
    mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, item_dim))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class SummaryTower(nn.Module):
    """e_sem(b) = g(Theta(b)) in the encoder's item space."""

    def __init__(self, text_dim: int, item_dim: int, hidden: int) -> None:
        super().__init__()
        self.text_dim, self.item_dim, self.hidden = text_dim, item_dim, hidden
        self.semantic = user_map(text_dim, hidden, item_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.semantic(x)

    def project(self, raw: np.ndarray) -> np.ndarray:
        """Text embeddings [N, D] -> e_sem(b) [N, d] (numpy in, numpy out)."""
        with torch.no_grad():
            return self(torch.from_numpy(np.asarray(raw, dtype=np.float32))).numpy()


@dataclass(frozen=True)
class EncoderSpace:
    """The encoder's item table as the cloud's item space, with the tower that maps summaries into it."""

    tower: SummaryTower
    table: np.ndarray  # E_str [V + 1, d], row 0 the padding
    encoder_digest: str  # SHA-256 of the encoder checkpoint E_str was copied from
    digest: str  # SHA-256 of the tower file

    @property
    def key(self) -> str:
        return f"encoder-{self.encoder_digest[:12]}+tower-{self.digest[:12]}"

    def summaries(self, raw: np.ndarray) -> np.ndarray:
        return self.tower.project(raw).astype(np.float32)

    def stale_for(self, encoder_digest: str) -> bool:
        """The device's encoder checkpoint (its SHA-256, or the first 12 hex digits of it) is no longer the one
        this space's table was copied from."""
        return not self.encoder_digest.startswith(encoder_digest)


@dataclass
class TowerResult:
    tower: SummaryTower
    config: HeadConfig
    fitted: Fitted


def train_summary_tower(train: SummaryExamples, valid: SummaryExamples, encoder_table: np.ndarray,
                        config: HeadConfig, progress: bool = True) -> TowerResult:  # fmt: skip
    """Fit g (Eq. 2 into E_str, CE or Eq. 10) on the summaries' next items, the epoch chosen on validation."""
    torch.manual_seed(config.seed)
    tower = SummaryTower(train.raw.shape[1], encoder_table.shape[1], config.hidden)
    fitted = fit_user_map(tower, train, valid, encoder_table, config, progress, "semantic tower (encoder space)")
    return TowerResult(tower, config, fitted)


def tower_path(models_dir: Path, semantics_key: str) -> Path:
    """Where the encoder-space tower for these item semantics (the text encoder its input comes from) lives."""
    return Path(models_dir) / f"semantic-tower-{semantics_key}.pt"


def save_tower(path: Path, result: TowerResult, encoder_table: np.ndarray, semantics_key: str,
               encoder_digest: str, data: dict[str, Any]) -> Path:  # fmt: skip
    """The tower's weights, the copy of E_str, what it was trained on and its curve, atomically."""
    tower = result.tower
    return save_payload(path, {
        "format": TOWER_FORMAT, "semantics_key": semantics_key, "encoder_digest": encoder_digest,
        "shape": {"text_dim": tower.text_dim, "item_dim": tower.item_dim, "hidden": tower.hidden},
        "config": asdict(result.config), "best_valid": dict(result.fitted.best_valid),
        "best_epoch": result.fitted.best_epoch, "history": list(result.fitted.history),
        "seconds": result.fitted.seconds, "data": dict(data),
        "encoder_table": torch.from_numpy(np.asarray(encoder_table, dtype=np.float32)),
        "state_dict": {name: value.detach().cpu() for name, value in tower.state_dict().items()},
    })  # fmt: skip


def read_tower(path: Path, semantics_key: str, num_items: int, digest: str) -> tuple[EncoderSpace, dict]:
    """The encoder space of the tower at `path` (`digest` its file's SHA-256) for a catalogue of `num_items` and its
    record; TowerError when the file is unreadable, inconsistent or made for other item semantics."""
    payload = load_payload(Path(path), TOWER_FORMAT, "semantic tower", TowerError,
                           "train one with `tandem train --semantic --space encoder`")  # fmt: skip
    if payload.get("semantics_key") != semantics_key:
        raise TowerError(f"{path} was trained for item semantics {payload.get('semantics_key')}, not {semantics_key}")
    table = payload["encoder_table"].numpy()
    if len(table) != num_items + 1 or table.shape[1] != payload["shape"]["item_dim"]:
        raise TowerError(f"{path} holds an item table of shape {tuple(table.shape)} for a catalogue of "
                         f"{num_items} items")  # fmt: skip
    try:
        tower = SummaryTower(**payload["shape"])
        tower.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, KeyError) as exc:
        raise TowerError(f"{path} does not hold a semantic tower's weights: {str(exc).splitlines()[0]}") from exc
    tower.eval()
    record = {k: v for k, v in payload.items() if k not in ("state_dict", "encoder_table")}
    return EncoderSpace(tower, table, payload["encoder_digest"], digest), record

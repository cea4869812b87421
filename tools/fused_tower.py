"""CDA4Rec Eq. 5 trained jointly (with Eq. 10 or CE): the semantic user embedding in the device encoder's item space.

Tandem's rank step fuses at score level (`tools.fusion.fuse_scores`) because e_sem lives in the PCA'd text space
of Eq. 1 and the device encoder trains its own item table. The paper fuses the embeddings themselves and scores
the fusion against one item table:

    e_sem(b) = g(Theta(b))                               (Eq. 2, a learned map into the encoder's item space)
    e_u      = beta * e_sem(b) + (1 - beta) * e_str      (Eq. 5; e_str = f_loc(X_u), Eq. 4)
    y_i      = e_u . e_i,  e_i a row of the encoder's item table E_str   (Eq. 6)

Choices (the paper leaves them open): the encoder and its item table are frozen (the device's checkpoint is the
one `eval rec` scores; only g is trained, with beta fixed per run and chosen on validation); g is an MLP whose
output layer starts at zero, so the tower starts exactly at the encoder alone (beta < 1) and validation can only
keep an epoch that beats it; beta = 1 trains g alone: the semantic tower alone, scored against E_str. g reads
only the abstract's text embedding (what the cloud sees); e_str stays on the device. The training data are the
semantic head's (`tools.semantic_head.training_cases`: summaries at cut points of training users' training
sequences) with e_str computed from the same prefix; the loop is `tools.semantic_head.fit_user_map`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tools.encoder_space import user_map
from tools.encoders import SequentialEncoder
from tools.semantic_head import Fitted, HeadConfig, SummaryExamples, fit_user_map


class FusedTower(nn.Module):
    """x = [Theta(b) | e_str] [N, D + d] -> e_u = beta * g(Theta(b)) + (1 - beta) * e_str [N, d] (Eq. 5)."""

    def __init__(self, text_dim: int, item_dim: int, hidden: int, beta: float) -> None:
        super().__init__()
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.text_dim, self.item_dim, self.hidden, self.beta = text_dim, item_dim, hidden, beta
        self.semantic = user_map(text_dim, hidden, item_dim)

    def forward(self, x: Tensor) -> Tensor:
        text, structured = x[:, : self.text_dim], x[:, self.text_dim :]
        return self.beta * self.semantic(text) + (1.0 - self.beta) * structured

    def semantic_vectors(self, raw: np.ndarray) -> np.ndarray:
        """e_sem = g(Theta(b)) for text embeddings [N, D] (what the cloud would send for an abstract)."""
        with torch.no_grad():
            return self.semantic(torch.from_numpy(np.asarray(raw, dtype=np.float32))).numpy()


def with_structured(examples: SummaryExamples, encoder: SequentialEncoder, chunk: int = 512) -> SummaryExamples:
    """The same examples with each one's e_str (Eq. 4: the encoder on the example's history, newest `max_len`)
    appended to its text embedding: the input rows `FusedTower` reads."""
    parts = [encoder.encode(examples.seen[start : start + chunk]).float().numpy()
             for start in range(0, len(examples), chunk)]  # fmt: skip
    structured = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    return SummaryExamples(np.hstack([examples.raw, structured]).astype(np.float32), examples.targets, examples.seen)


def item_table(encoder: SequentialEncoder) -> np.ndarray:
    """E_str: the encoder's item table [V + 1, d] (row 0 padding), the table Eq. 6 scores against."""
    return encoder.item_emb.weight.detach().float().cpu().numpy()


@dataclass
class TowerResult:
    tower: FusedTower
    config: HeadConfig
    fitted: Fitted


def train_tower(train: SummaryExamples, valid: SummaryExamples, encoder: SequentialEncoder, beta: float,
                config: HeadConfig, progress: bool = True) -> TowerResult:  # fmt: skip
    """Fit g for one beta on examples from `with_structured` (Eq. 5 with Eq. 10 or CE), epoch on validation."""
    torch.manual_seed(config.seed)
    tower = FusedTower(train.raw.shape[1] - encoder.dim, encoder.dim, config.hidden, beta)
    fitted = fit_user_map(tower, train, valid, item_table(encoder), config, progress, f"Eq. 5 tower, beta {beta:g}")
    return TowerResult(tower, config, fitted)

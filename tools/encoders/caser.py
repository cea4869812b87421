"""Caser: convolutional sequence embedding (Tang & Wang, WSDM 2018; a CHORD backbone).

The newest `window` items form an "image" E [window, d]. Horizontal filters of every height h = 1..window
(full width d, max-pooled over time) catch union-level sequential patterns; vertical filters [window, 1]
take weighted sums of the rows (point-level patterns). A fully connected layer turns both into z [d].

Adaptation for a device encoder (CDA4Rec Eq. 4): Caser's per-user embedding P_u cannot exist for users
never seen in training (few-shot users, new devices), so the long-term part is the mean embedding of the
whole history instead; the user embedding W[z; p_u] lives in the item space and is scored by dot product
with the shared item table (Eq. 6). Every position is one sliding window, so the model trains on all of
them at once, like the original's sliding windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SequentialEncoder


class Caser(SequentialEncoder):
    """Convolutional encoder: [B, L] item ids -> [B, d] user embedding (CDA4Rec Eq. 4)."""

    name = "caser"
    per_position = True

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        max_len: int = 200,
        item_table: np.ndarray | None = None,
        window: int = 5,
        horizontal: int = 16,
        vertical: int = 4,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(num_items, dim, max_len, item_table)
        self.window, self.horizontal, self.vertical, self.dropout = window, horizontal, vertical, dropout
        self.conv_v = nn.Conv2d(1, vertical, (window, 1))  # [N, 1, W, d] -> [N, n_v, 1, d]
        self.conv_h = nn.ModuleList(nn.Conv2d(1, horizontal, (h, dim)) for h in range(1, window + 1))
        self.fc = nn.Linear(vertical * dim + horizontal * window, dim)
        self.out = nn.Linear(2 * dim, dim)  # W [z; p_u]
        self.drop = nn.Dropout(dropout)

    def config(self) -> dict[str, Any]:
        extra = {"window": self.window, "horizontal": self.horizontal, "vertical": self.vertical}
        return {**super().config(), **extra, "dropout": self.dropout}

    def _windows(self, windows: Tensor) -> Tensor:
        """Caser's convolutions on windows [N, W] of item ids -> z [N, d]."""
        image = self.item_emb(windows).unsqueeze(1) * self.dim**0.5  # [N, 1, W, d]
        o_v = self.conv_v(image).flatten(1)  # [N, n_v * d]
        o_h = [F.relu(conv(image).squeeze(3)).amax(dim=2) for conv in self.conv_h]  # W x [N, n_h]
        z = F.relu(self.fc(self.drop(torch.cat([o_v, *o_h], dim=1))))  # [N, d]
        return z

    def sequence_output(self, seqs: Tensor) -> Tensor:
        """User embedding after every position (causal sliding windows): [B, L] -> [B, L, d]."""
        seqs = seqs[:, -self.max_len :]
        b, length = seqs.shape
        padded = F.pad(seqs, (self.window - 1, 0))  # [B, L + W - 1]
        windows = padded.unfold(1, self.window, 1)  # [B, L, W]
        z = self._windows(windows.reshape(b * length, self.window)).view(b, length, self.dim)  # [B, L, d]
        real = (seqs > 0).float().unsqueeze(-1)  # [B, L, 1]
        summed = (self.item_emb(seqs) * real).cumsum(dim=1)  # [B, L, d]
        p_u = summed / real.cumsum(dim=1).clamp(min=1.0)  # running mean of the history [B, L, d]
        return self.out(self.drop(torch.cat([z, p_u], dim=-1)))  # [B, L, d]

    def training_outputs(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, L, d]
        return self.sequence_output(seqs)

    def forward(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, d]
        seqs = seqs[:, -self.max_len :]
        if seqs.shape[1] < self.window:
            seqs = F.pad(seqs, (self.window - seqs.shape[1], 0))
        z = self._windows(seqs[:, -self.window :])  # [B, d]
        real = (seqs > 0).float().unsqueeze(-1)  # [B, L, 1]
        p_u = (self.item_emb(seqs) * real).sum(1) / real.sum(1).clamp(min=1.0)  # [B, d]
        return self.out(self.drop(torch.cat([z, p_u], dim=-1)))  # [B, d]

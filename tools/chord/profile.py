"""Device-side user profiling (CHORD Eq. 6): z_d = G_d(X^d), a GRU over the newest interactions.

The GRU reads the (frozen, shared) item embeddings of the device encoder, so the device needs no other
item table; only the l-dimensional vector z_d crosses to the cloud, never the history itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tools.encoders import pad_left


class UserProfiler(nn.Module):
    """CHORD Eq. 6: item ids [B, L] (left-padded) -> user profile z [B, l]."""

    def __init__(self, item_table: Tensor, profile_dim: int = 32, max_len: int = 50) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("items", item_table.detach().clone().float())  # [V + 1, d], frozen
        self.gru = nn.GRU(item_table.shape[1], profile_dim, batch_first=True)
        self.norm = nn.LayerNorm(profile_dim)

    @property
    def profile_dim(self) -> int:
        return self.gru.hidden_size

    def forward(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, l]
        seqs = seqs[:, -self.max_len :]
        x = self.items[seqs]  # [B, L, d]; padding rows are zeros
        lengths = (seqs > 0).sum(1).clamp(min=1).cpu()  # [B]
        # left padding -> right padding so the GRU stops at the newest real item
        shift = torch.arange(seqs.shape[1]).unsqueeze(0) + (seqs.shape[1] - lengths).unsqueeze(1)  # [B, L]
        right = x.gather(1, (shift % seqs.shape[1]).unsqueeze(-1).expand_as(x))  # [B, L, d], real items first
        packed = nn.utils.rnn.pack_padded_sequence(right, lengths, batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # h [1, B, l]
        return self.norm(h.squeeze(0))  # [B, l]

    @torch.no_grad()
    def profile(self, histories: Sequence[np.ndarray]) -> Tensor:
        """Numpy histories (oldest first, any length) -> z [B, l], without gradients."""
        return self.forward(pad_left(histories, self.max_len))

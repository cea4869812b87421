"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018; CDA4Rec ref. [13]).

A stack of causal self-attention blocks over the item sequence with learned position embeddings; the
output at the newest position is the user embedding e_u^str of CDA4Rec Eq. 4, scored against the shared
item table by dot product (Eq. 6). Every position predicts the next item, so one sequence gives L training
targets.

Two details differ from the original and are deliberate:
- positions are learned per distance from the newest item (0 = newest), so a batch can be cut to its
  longest sequence without changing any position (faster training, same model);
- attention and feed-forward layers are plain `nn.Linear` layers (pre-LayerNorm blocks), so the CHORD
  quantizer finds every weight matrix it may quantize.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SequentialEncoder


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention that never attends to left padding."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:  # x [B, L, d], allowed [B, 1, L, L] bool
        b, length, dim = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # [B, H, L, d/H]
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # [B, H, L, d/H]
        return self.out(y.transpose(1, 2).reshape(b, length, dim))  # [B, L, d]


class Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:  # [B, L, d] -> [B, L, d]
        x = x + self.drop(self.attn(self.norm1(x), allowed))
        return x + self.drop(self.ffn(self.norm2(x)))


class SASRec(SequentialEncoder):
    """Causal self-attention encoder: [B, L] item ids -> [B, d] user embedding (CDA4Rec Eq. 4)."""

    name = "sasrec"
    per_position = True

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        max_len: int = 200,
        item_table: np.ndarray | None = None,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        ffn: int | None = None,
    ) -> None:
        super().__init__(num_items, dim, max_len, item_table)
        self.layers, self.heads, self.dropout = layers, heads, dropout
        self.ffn_width = ffn or dim  # the feed-forward layer's inner width (the original SASRec: the model width)
        self.pos_emb = nn.Embedding(max_len, dim)  # [L_max, d], index 0 = newest item
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.emb_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout, self.ffn_width) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)

    def config(self) -> dict[str, Any]:
        wider = {"ffn": self.ffn_width} if self.ffn_width != self.dim else {}  # recorded only when it is not the width
        return {**super().config(), "layers": self.layers, "heads": self.heads, "dropout": self.dropout, **wider}

    def sequence_output(self, seqs: Tensor) -> Tensor:
        """Hidden state at every position: [B, L] -> [B, L, d] (zeros at padding)."""
        seqs = seqs[:, -self.max_len :]
        length = seqs.shape[1]
        real = seqs > 0  # [B, L]
        x = self.item_emb(seqs) * math.sqrt(self.dim)  # [B, L, d]
        x = x + self.pos_emb(self.reverse_positions(length, seqs.device))  # [B, L, d]
        x = self.emb_drop(x) * real.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()  # [L, L]
        diagonal = torch.eye(length, dtype=torch.bool, device=seqs.device)  # padding rows see themselves: no NaN
        allowed = (causal & real.unsqueeze(1)) | diagonal  # [B, L, L]
        allowed = allowed.unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, allowed) * real.unsqueeze(-1)
        return self.final_norm(x)  # [B, L, d]

    def training_outputs(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, L, d]
        return self.sequence_output(seqs)

    def forward(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, d]
        return self.sequence_output(seqs)[:, -1]

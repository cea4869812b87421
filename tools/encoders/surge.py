"""SURGE: sequential recommendation with graph neural networks (Chang et al., SIGIR 2021; CDA4Rec ref. [14]).

A compact version of the paper's four steps, per sequence:
1. Interest graph by metric learning: multi-head weighted cosine similarity M_ij between the items of the
   sequence, sparsified by keeping the top `sparsity` share of pairs (relative ranking) plus self-loops.
2. Interest-fusion graph convolution: each node aggregates its neighbours with weights softmax_j(a_j + b_j),
   a = cluster-aware score (node vs. the mean of its neighbourhood), b = query-aware score (node vs. the
   query), then h' = LN(h + ReLU(W_a sum_j E_ij h_j)).
3. Interest-extraction graph pooling: a soft assignment S [L, m] (one propagation step + softmax) pools
   the nodes into m interest clusters, kept in time order by each cluster's mean position; the paper's
   same-mapping and single-affiliation regularisers are added to the training loss.
4. Prediction: an attention-update GRU (AUGRU) over the interest sequence, with the graph readout and
   the query, gives the user embedding e_u^str of CDA4Rec Eq. 4.

Adaptation: the paper is a CTR model whose query is the target item; a full-ranking encoder must give one
user vector for all items, so the query is the newest item of the sequence (the current interest).
The graph is O(L^2) per user, so `max_len` (newest items read) defaults to 50.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Objective, SequentialEncoder


class AUGRUCell(nn.Module):
    """GRU cell whose update gate is scaled by an attention weight a: u' = a * u."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.x2h = nn.Linear(dim, 3 * dim)
        self.h2h = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, x: Tensor, h: Tensor, a: Tensor) -> Tensor:  # x, h [B, d], a [B, 1] -> [B, d]
        xr, xz, xn = self.x2h(x).chunk(3, dim=-1)
        hr, hz, hn = self.h2h(h).chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        u = torch.sigmoid(xz + hz) * a
        n = torch.tanh(xn + r * hn)
        return (1 - u) * h + u * n


def _scorer(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(3 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))


class SURGE(SequentialEncoder):
    """Graph encoder: [B, L] item ids -> [B, d] user embedding (CDA4Rec Eq. 4)."""

    name = "surge"
    per_position = False

    def __init__(
        self,
        num_items: int,
        dim: int = 64,
        max_len: int = 50,
        item_table: np.ndarray | None = None,
        metric_heads: int = 2,
        sparsity: float = 0.5,
        clusters: int = 8,
        dropout: float = 0.2,
        reg_weight: float = 0.01,
    ) -> None:
        super().__init__(num_items, dim, max_len, item_table)
        self.metric_heads, self.sparsity, self.clusters = metric_heads, sparsity, clusters
        self.dropout, self.reg_weight = dropout, reg_weight
        self.metric = nn.Parameter(torch.ones(metric_heads, dim) + 0.01 * torch.randn(metric_heads, dim))  # [K, d]
        self.w_a = nn.Linear(dim, dim, bias=False)
        self.cluster_score = _scorer(dim)
        self.query_score = _scorer(dim)
        self.norm = nn.LayerNorm(dim)
        self.assign = nn.Linear(dim, clusters)
        self.gru = AUGRUCell(dim)
        self.out = nn.Linear(3 * dim, dim)  # [h_s; h_g; query] -> user
        self.drop = nn.Dropout(dropout)
        self._regulariser: Tensor | None = None

    def config(self) -> dict[str, Any]:
        extra = {"metric_heads": self.metric_heads, "sparsity": self.sparsity, "clusters": self.clusters}
        return {**super().config(), **extra, "dropout": self.dropout, "reg_weight": self.reg_weight}

    def interest_graph(self, h: Tensor, real: Tensor) -> Tensor:
        """Step 1: weighted adjacency [B, L, L] (similarity where kept, else 0) from h [B, L, d]."""
        views = F.normalize(h.unsqueeze(1) * self.metric[None, :, None, :], dim=-1)  # [B, K, L, d]
        sim = (views @ views.transpose(-1, -2)).mean(1)  # [B, L, L] weighted cosine, SURGE Eq. 1
        pair = real.unsqueeze(2) & real.unsqueeze(1)  # [B, L, L]
        flat = sim.detach().masked_fill(~pair, float("-inf")).flatten(1)  # [B, L*L]
        keep = (self.sparsity * real.sum(1).float() ** 2).ceil().long().clamp(min=1)  # [B]
        top = flat.topk(int(keep.max()), dim=1).values  # [B, k_max]
        threshold = top.gather(1, (keep - 1).unsqueeze(1)).view(-1, 1, 1)  # [B, 1, 1]
        eye = torch.eye(h.shape[1], dtype=torch.bool, device=h.device)
        adj = ((sim >= threshold) & pair) | (eye & pair)  # [B, L, L]
        return sim.clamp(min=0.0) * adj + eye * pair * 1e-3  # self-loops never vanish

    def forward(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, d]
        seqs = seqs[:, -self.max_len :]
        real = seqs > 0  # [B, L]
        h = self.drop(self.item_emb(seqs))  # [B, L, d]
        query = self.item_emb(seqs[:, -1])  # newest item [B, d]
        weights = self.interest_graph(h, real)  # [B, L, L]
        norm_adj = weights / weights.sum(-1, keepdim=True).clamp(min=1e-9)  # row-normalised [B, L, L]

        # Step 2: cluster- and query-aware attention over each node's neighbours.
        center = norm_adj @ h  # neighbourhood mean h_ic [B, L, d]
        wh = self.w_a(h)  # [B, L, d]
        q = query.unsqueeze(1).expand_as(h)  # [B, L, d]
        a = self.cluster_score(torch.cat([wh, center, wh * center], -1)).squeeze(-1)  # [B, L]
        b = self.query_score(torch.cat([wh, q, wh * q], -1)).squeeze(-1)  # [B, L]
        logits = (a + b).unsqueeze(1).expand(-1, h.shape[1], -1)  # [B, L(i), L(j)]
        att = torch.softmax(logits.masked_fill(weights <= 0, -1e9), dim=-1)  # E_ij over neighbours [B, L, L]
        h2 = self.norm(h + F.relu(self.w_a(att @ h))) * real.unsqueeze(-1)  # [B, L, d]

        # Step 3: soft assignment into m interest clusters, pooled, kept in time order.
        s = torch.softmax(self.assign(norm_adj @ h2), dim=-1) * real.unsqueeze(-1)  # [B, L, m]
        mass = s.sum(1).clamp(min=1e-9)  # [B, m]
        pooled = (s.transpose(1, 2) @ h2) / mass.unsqueeze(-1)  # [B, m, d]
        position = torch.arange(h.shape[1], device=h.device, dtype=h.dtype)
        order = ((s * position[None, :, None]).sum(1) / mass).argsort(dim=1)  # [B, m]
        pooled = pooled.gather(1, order.unsqueeze(-1).expand_as(pooled))  # [B, m, d]
        importance = torch.softmax((a + b).masked_fill(~real, -1e9), dim=1)  # [B, L]
        readout = (importance.unsqueeze(-1) * h2).sum(1)  # graph readout h_g [B, d]
        if self.training:
            same_map = (norm_adj - s @ s.transpose(1, 2)).pow(2).sum((1, 2)).mean()
            entropy = -(s * (s + 1e-9).log()).sum(-1).sum(1).div(real.sum(1).clamp(min=1)).mean()
            self._regulariser = same_map / h.shape[1] + entropy

        # Step 4: attention-update GRU over the interest sequence, attention w.r.t. the query.
        attention = torch.softmax(pooled @ query.unsqueeze(-1), dim=1)  # [B, m, 1]
        state = torch.zeros_like(query)  # [B, d]
        for c in range(pooled.shape[1]):
            state = self.gru(pooled[:, c], state, attention[:, c])
        return self.out(self.drop(torch.cat([state, readout, query], -1)))  # [B, d]

    def calculate_loss(self, inputs: Tensor, targets: Tensor, objective: Objective) -> Tensor:
        """CDA4Rec Eq. 10 (or CE) plus SURGE's pooling regularisers."""
        loss = super().calculate_loss(inputs, targets, objective)
        if self._regulariser is not None:
            loss = loss + self.reg_weight * self._regulariser
            self._regulariser = None
        return loss

"""Cloud-side CHORD: multi-granularity sensitivity hypernetworks and the strategy functions (Eq. 7-13).

Shapes: B users, layer i has C_i output channels of K_i weights each (fan-in), n layers in all.

- Eq. 7  filter level:  alpha^F_i = H^F_i(z)  [B, C_i]
- Eq. 8  element level: alpha^E_i = H^E_i(z)  [B, C_i, K_i], produced in low-rank form U_i V_i^T (rank r) so a
         layer's element hypernetwork has (C_i + K_i) r outputs instead of C_i K_i
- Eq. 9  layer level:   alpha^L = H^L(z)      [B, n]
- Eq. 10 S_ij = sum_k |alpha^E_ijk|; Eq. 11 alpha^W_ij = softmax_j(alpha^F_i) * S_ij
- Eq. 12 Gamma: per layer, the top beta of channels by alpha^W get 8 bits, the next beta 4 bits, the rest 2
- Eq. 13 Lambda: the `n_adjust` most sensitive layers (by alpha^L) move every channel one level up in
         (2, 4, 6, 8), the `n_adjust` least sensitive one level down.

Gamma and Lambda are discrete; during training both pass gradients through a straight-through estimator:
the forward pass uses the hard one-hot level of each channel, the backward pass the gradient of a sigmoid
relaxation around the tier thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tools.quant import LEVELS, quantizable_layers

_EPS = 1e-8
LEVEL_BITS = torch.tensor(LEVELS, dtype=torch.float32)  # [4]


@dataclass(frozen=True)
class LayerSpec:
    """One quantizable layer of the frozen encoder: name, output channels C, fan-in K."""

    name: str
    channels: int
    fan_in: int


def layer_specs(encoder: nn.Module) -> list[LayerSpec]:
    """The layers CHORD quantizes (every nn.Linear / nn.Conv2d), in module order."""
    return [LayerSpec(name, m.weight.shape[0], m.weight[0].numel()) for name, m in quantizable_layers(encoder)]


@dataclass
class Sensitivity:
    """What the hypernetworks say about one batch of users."""

    filter: list[Tensor]  # Eq. 7, n x [B, C_i]
    element: list[Tensor]  # Eq. 10 (aggregated Eq. 8), n x [B, C_i]
    layer: Tensor  # Eq. 9, [B, n]

    def weighted(self) -> list[Tensor]:
        """CHORD Eq. 11: alpha^W_i = softmax(alpha^F_i) * S_i, n x [B, C_i]."""
        return [weighted_sensitivity(f, s) for f, s in zip(self.filter, self.element, strict=True)]


class ChordHypernet(nn.Module):
    """CHORD Eq. 7-9: filter-, element- and layer-level hypernetworks on a user profile z [B, l]."""

    def __init__(self, specs: list[LayerSpec], profile_dim: int = 32, hidden: int = 64, rank: int = 4) -> None:
        super().__init__()
        self.specs, self.rank = list(specs), rank
        self.trunk = nn.Sequential(nn.Linear(profile_dim, hidden), nn.ReLU())
        self.filter_heads = nn.ModuleList(nn.Linear(hidden, s.channels) for s in specs)  # Eq. 7
        self.element_out = nn.ModuleList(nn.Linear(hidden, s.channels * rank) for s in specs)  # Eq. 8, U_i
        self.element_in = nn.ModuleList(nn.Linear(hidden, s.fan_in * rank) for s in specs)  # Eq. 8, V_i
        self.layer_head = nn.Sequential(nn.Linear(profile_dim, hidden), nn.ReLU(), nn.Linear(hidden, len(specs)))
        for head in self.filter_heads:  # start from a near-uniform filter importance
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def element_importance(self, h: Tensor, i: int) -> Tensor:
        """CHORD Eq. 8 for layer i: alpha^E_i = U V^T [B, C_i, K_i] from the trunk features h [B, hidden]."""
        spec = self.specs[i]
        u = self.element_out[i](h).view(-1, spec.channels, self.rank)  # [B, C, r]
        v = self.element_in[i](h).view(-1, spec.fan_in, self.rank)  # [B, K, r]
        return torch.einsum("bcr,bkr->bck", u, v)  # [B, C, K]

    def forward(self, z: Tensor) -> Sensitivity:  # z [B, l]
        h = self.trunk(z)  # [B, hidden]
        filters = [head(h) for head in self.filter_heads]  # Eq. 7, n x [B, C_i]
        elements = [channel_l1(self.element_importance(h, i)) for i in range(len(self.specs))]  # Eq. 8 + 10
        return Sensitivity(filters, elements, self.layer_head(z))  # Eq. 9: [B, n]


def channel_l1(element: Tensor) -> Tensor:
    """CHORD Eq. 10: S_ij = sum_{k in C_j} |alpha^E_ik|: [B, C, K] -> [B, C]."""
    return element.abs().sum(-1)


def weighted_sensitivity(filter_scores: Tensor, element_l1: Tensor) -> Tensor:
    """CHORD Eq. 11: alpha^W_ij = softmax(alpha^F_i)_j * S_ij: [B, C], [B, C] -> [B, C]."""
    return torch.softmax(filter_scores, dim=-1) * element_l1


def _standardize(x: Tensor) -> Tensor:
    """Per row: (x - mean) / std, the scale on which the relaxation's temperature is read: [B, N] -> [B, N]."""
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True, unbiased=False) + _EPS)


def _ranks(x: Tensor) -> Tensor:
    """0-based descending rank of each entry in its row: [B, N] -> [B, N] (ties broken by position)."""
    return torch.argsort(torch.argsort(x, dim=-1, descending=True, stable=True), dim=-1, stable=True)


def _threshold(x: Tensor, k: int) -> Tensor:
    """A value between the k-th and (k+1)-th largest entry of each row (detached): [B, N] -> [B, 1]."""
    n = x.shape[-1]
    if k <= 0:
        return torch.full_like(x[:, :1], float("inf"))
    if k >= n:
        return torch.full_like(x[:, :1], float("-inf"))
    top = torch.topk(x.detach(), k + 1, dim=-1).values  # [B, k + 1]
    return (top[:, k - 1 : k] + top[:, k : k + 1]) / 2


def tier_counts(channels: int, beta: float) -> tuple[int, int]:
    """How many channels of a layer get 8 and 4 bits under CHORD Eq. 12 (top beta, next beta)."""
    k8 = min(channels, int(round(beta * channels)))
    k4 = min(channels - k8, int(round(beta * channels)))
    return k8, k4


def tier(sensitivity: Tensor, beta: float, temperature: float = 0.5) -> Tensor:
    """CHORD Eq. 12, Gamma(alpha^W, beta): one-hot level over LEVELS per channel, [B, C] -> [B, C, 4].

    Hard forward: top beta of channels -> 8 bits, next beta -> 4 bits, rest -> 2 bits. Backward: the gradient
    of sigmoid((s - threshold) / temperature) on the standardized log-sensitivity s (straight-through).
    """
    if not 0.0 <= beta <= 0.5:
        raise ValueError(f"beta must lie in [0, 0.5] (two tiers of beta each), got {beta}")
    s = _standardize(torch.log(sensitivity + _EPS))  # [B, C]
    k8, k4 = tier_counts(s.shape[-1], beta)
    rank = _ranks(s)  # [B, C]
    hard8 = (rank < k8).float()
    hard_ge4 = (rank < k8 + k4).float()
    soft8 = torch.sigmoid((s - _threshold(s, k8)) / temperature)
    soft_ge4 = torch.sigmoid((s - _threshold(s, k8 + k4)) / temperature)
    p8 = hard8 + soft8 - soft8.detach()
    p_ge4 = hard_ge4 + soft_ge4 - soft_ge4.detach()
    zero = torch.zeros_like(p8)
    return torch.stack([1.0 - p_ge4, p_ge4 - p8, zero, p8], dim=-1)  # [B, C, 4] over (2, 4, 6, 8)


def _shift_up(m: Tensor) -> Tensor:
    """Every channel one level up (8 stays 8): [B, C, 4] -> [B, C, 4]."""
    return torch.stack([torch.zeros_like(m[..., 0]), m[..., 0], m[..., 1], m[..., 2] + m[..., 3]], dim=-1)


def _shift_down(m: Tensor) -> Tensor:
    """Every channel one level down (2 stays 2): [B, C, 4] -> [B, C, 4]."""
    return torch.stack([m[..., 0] + m[..., 1], m[..., 2], m[..., 3], torch.zeros_like(m[..., 0])], dim=-1)


def layer_adjust(
    levels: list[Tensor], layer_scores: Tensor, n_adjust: int = 1, temperature: float = 0.5
) -> list[Tensor]:
    """CHORD Eq. 13, Lambda(alpha^L, sigma'): boost the most sensitive layers, compress the least sensitive.

    `levels` n x [B, C_i, 4] one-hot (from Eq. 12), `layer_scores` alpha^L [B, n] -> n x [B, C_i, 4]. The
    `n_adjust` top layers of each user move one level up, the `n_adjust` bottom layers one level down
    (straight-through: hard selection forward, sigmoid relaxation backward).
    """
    n = layer_scores.shape[-1]
    n_adjust = min(n_adjust, n // 2)
    if n_adjust <= 0:
        return levels
    a = _standardize(layer_scores)  # [B, n]
    rank = _ranks(a)
    up_soft = torch.sigmoid((a - _threshold(a, n_adjust)) / temperature)
    down_soft = torch.sigmoid((_threshold(a, n - n_adjust) - a) / temperature)
    up = (rank < n_adjust).float() + up_soft - up_soft.detach()  # [B, n]
    down = (rank >= n - n_adjust).float() + down_soft - down_soft.detach()
    out = []
    for i, m in enumerate(levels):
        u, d = up[:, i, None, None], down[:, i, None, None]  # [B, 1, 1]
        out.append((1.0 - u - d) * m + u * _shift_up(m) + d * _shift_down(m))
    return out


def level_bits(levels: list[Tensor]) -> list[Tensor]:
    """Hard bit-widths from one-hot levels: n x [B, C, 4] -> n x int64 [B, C]."""
    return [LEVEL_BITS[m.detach().argmax(-1)].to(torch.int64) for m in levels]

"""Per-user mixed-precision forward of a frozen encoder, batched (the training path of CHORD Eq. 2-3).

Every user of a batch has its own strategy, so every user has its own quantized weights. Each quantizable
layer is wrapped so that, once `set_levels` has been called, row b of the batch runs with the weights
W_b = sum_l M_b[:, l] * Q_{LEVELS[l]}(W) (M_b = that user's one-hot level per channel, [C, 4]). The four
dequantized versions Q_2(W), Q_4(W), Q_6(W), Q_8(W) of every frozen weight are computed once. Gradients
flow into M (and through the straight-through estimators of Eq. 12-13 into the hypernetworks), never
into the frozen encoder.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tools.encoders import SequentialEncoder
from tools.quant import LEVELS, Scheme, fake_quantize, quantizable_layers

from .hypernet import LayerSpec


class PerUserLayer(nn.Module):
    """A frozen nn.Linear / nn.Conv2d that can run a different weight for every row of the batch."""

    def __init__(self, inner: nn.Linear | nn.Conv2d) -> None:
        super().__init__()
        self.inner = inner
        self.weight: Tensor | None = None  # [B, C_out, ...] once set

    def forward(self, x: Tensor) -> Tensor:
        w, layer = self.weight, self.inner
        if w is None:
            return layer(x)
        if x.shape[0] != w.shape[0]:
            raise ValueError(f"batch of {x.shape[0]} rows but weights for {w.shape[0]} users")
        if isinstance(layer, nn.Linear):
            y = torch.einsum("b...k,bck->b...c", x, w)  # [B, ..., C_out]
            return y if layer.bias is None else y + layer.bias
        b, c_in, height, width = x.shape  # Conv2d: one group per user
        weight = w.reshape(b * w.shape[1], *w.shape[2:])  # [B * C_out, C_in / g, kh, kw]
        bias = None if layer.bias is None else layer.bias.repeat(b)
        y = F.conv2d(x.reshape(1, b * c_in, height, width), weight, bias, layer.stride, layer.padding,
                     layer.dilation, layer.groups * b)  # fmt: skip
        return y.view(b, w.shape[1], *y.shape[2:])  # [B, C_out, H', W']


class MixedPrecisionEncoder(nn.Module):
    """A frozen copy of `encoder` whose quantizable layers take per-user mixed-precision weights."""

    def __init__(self, encoder: SequentialEncoder, specs: list[LayerSpec], scheme: Scheme = "minmax") -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        layers = dict(quantizable_layers(self.encoder))
        self.wrappers: list[PerUserLayer] = []
        self.quantized: list[Tensor] = []  # n x [4, C_i, ...]: Q_b(W_i) for b in LEVELS
        for spec in specs:
            inner = layers[spec.name]
            wrapper = PerUserLayer(inner)
            parent, _, child = spec.name.rpartition(".")
            setattr(self.encoder.get_submodule(parent) if parent else self.encoder, child, wrapper)
            self.wrappers.append(wrapper)
            self.quantized.append(torch.stack([fake_quantize(inner.weight.detach(), b, scheme) for b in LEVELS]))

    def set_levels(self, levels: list[Tensor] | None) -> None:
        """Per-user one-hot levels n x [B, C_i, 4] (None = back to full precision)."""
        for i, wrapper in enumerate(self.wrappers):
            if levels is None:
                wrapper.weight = None
                continue
            q = self.quantized[i]  # [4, C, ...]
            w = torch.einsum("bcl,lck->bck", levels[i], q.flatten(2))  # [B, C, K]
            wrapper.weight = w.view(w.shape[0], *q.shape[1:])

    def forward(self, seqs: Tensor) -> Tensor:  # [B, L] -> [B, d]
        return self.encoder(seqs)

    def full_scores(self, user: Tensor) -> Tensor:  # [B, d] -> [B, V + 1]
        return self.encoder.full_scores(user)

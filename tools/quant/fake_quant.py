"""Channel-wise fake quantization of a frozen weight at 2/4/6/8 bits per output channel (CHORD Eq. 3).

A weight W of a linear layer [C_out, C_in] or a convolution [C_out, C_in, kh, kw] is seen as C_out rows of
K = fan-in values. Row k is quantized with its own bit-width b_k and its own scale s_k and integer
zero-point z_k:

- `minmax` (asymmetric, the "Quant" baseline of CHORD Table 2): range [min(w, 0), max(w, 0)] mapped onto
  0 .. 2^b - 1; s = (hi - lo) / (2^b - 1), z = round(-lo / s), q = clamp(round(w / s) + z, 0, 2^b - 1).
- `symmetric`: s = max|w| / (2^(b-1) - 1), z = 2^(b-1), q = clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1) + z.

Dequantization is always w_hat = (q - z) * s, the same float operations as the packed device path in
`tools.quant.packed`, so both give identical weights. Rounding passes gradients straight through
(w + (w_hat - w).detach()), which is what the hypernetwork training needs.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Scheme = Literal["minmax", "symmetric"]
LEVELS: tuple[int, ...] = (2, 4, 6, 8)  # bit-widths a channel may take; a 2-bit strategy code indexes them
_EPS = 1e-8


def _as_rows(weight: Tensor) -> Tensor:
    """Any weight [C_out, ...] -> rows [C_out, K]."""
    return weight.reshape(weight.shape[0], -1)


def _bits_per_row(bits: int | Tensor, rows: int, device: torch.device) -> Tensor:
    """A bit-width for every output channel: int or [C_out] -> float [C_out, 1]."""
    b = torch.as_tensor(bits, device=device)
    if b.dim() == 0:
        b = b.expand(rows)
    if b.shape != (rows,):
        raise ValueError(f"expected {rows} bit-widths, got shape {tuple(b.shape)}")
    if not bool(((b >= 2) & (b <= 8)).all()):
        raise ValueError(f"bit-widths must lie in 2..8, got {sorted(set(b.tolist()))}")
    return b.to(torch.float32).unsqueeze(1)


def channel_qparams(weight: Tensor, bits: int | Tensor, scheme: Scheme = "minmax") -> tuple[Tensor, Tensor]:
    """CHORD Eq. 3: per-output-channel scale [C_out] (float32) and integer zero-point [C_out] (as float32)."""
    rows = _as_rows(weight.detach()).float()  # [C, K]
    b = _bits_per_row(bits, rows.shape[0], rows.device)  # [C, 1]
    if scheme == "minmax":
        lo = rows.amin(1, keepdim=True).clamp(max=0.0)  # [C, 1]
        hi = rows.amax(1, keepdim=True).clamp(min=0.0)
        qmax = 2.0**b - 1.0
        scale = ((hi - lo) / qmax).clamp(min=_EPS)
        zero = torch.minimum(torch.maximum(torch.round(-lo / scale), torch.zeros_like(qmax)), qmax)
    elif scheme == "symmetric":
        half = 2.0 ** (b - 1.0)
        scale = (rows.abs().amax(1, keepdim=True) / (half - 1.0)).clamp(min=_EPS)
        zero = half
    else:
        raise ValueError(f"unknown quantization scheme {scheme!r}")
    return scale.squeeze(1), zero.expand_as(scale).squeeze(1).clone()


def quantize_codes(weight: Tensor, bits: int | Tensor, scheme: Scheme = "minmax") -> tuple[Tensor, Tensor, Tensor]:
    """CHORD Eq. 3: unsigned integer codes q [C_out, K] (int64), scale [C_out], zero-point [C_out]."""
    rows = _as_rows(weight.detach()).float()  # [C, K]
    b = _bits_per_row(bits, rows.shape[0], rows.device)  # [C, 1]
    scale, zero = channel_qparams(weight, bits, scheme)
    s, z = scale.unsqueeze(1), zero.unsqueeze(1)  # [C, 1]
    if scheme == "minmax":
        q = torch.minimum(torch.maximum(torch.round(rows / s) + z, torch.zeros_like(b)), 2.0**b - 1.0)
    else:
        limit = 2.0 ** (b - 1.0) - 1.0
        q = torch.minimum(torch.maximum(torch.round(rows / s), -limit), limit) + z
    return q.to(torch.int64), scale, zero


def dequantize(q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """w_hat = (q - z) * s, row by row: q [C, K], scale [C], zero [C] -> [C, K] float32."""
    return (q.float() - zero.float().unsqueeze(1)) * scale.float().unsqueeze(1)


def fake_quantize(weight: Tensor, bits: int | Tensor, scheme: Scheme = "minmax") -> Tensor:
    """CHORD Eq. 3 with a straight-through estimator: W [C_out, ...] -> W^Q of the same shape.

    The forward value is the dequantized weight; the backward pass treats rounding as identity.
    """
    q, scale, zero = quantize_codes(weight, bits, scheme)
    w_hat = dequantize(q, scale, zero).reshape(weight.shape).to(weight.dtype)
    return weight + (w_hat - weight).detach()

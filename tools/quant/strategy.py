"""The compact CHORD strategy: 2 bits per output channel, its decoding, and the device transform T.

Encoding (CHORD Section 3.2, "only 2 bits per channel"): every channel's bit-width in LEVELS = (2, 4, 6, 8)
becomes the code LEVELS.index(bits) in 0..3; the codes of all layers, in layer order, are packed four to
a byte (little-endian bit stream). Decoding needs only the channel count of each layer, which the device
knows from its own (frozen, shared) model.

The resource-aware transform T (CHORD Eq. 4, sigma_d = T(sigma'_d, R_d)) adapts a decoded strategy to
what the device reports right now (`DeviceResources`): it never raises a channel's precision, only
lowers it: first a hard cap on the bit-width, then, while the average bits exceed the device's budget,
the channels at the highest remaining bit-width drop one level (so the cloud's ordering of channels is
kept).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from .fake_quant import LEVELS
from .packed import pack_bits, unpack_bits

CODE_BITS = 2


def encode_strategy(bits: Sequence[Tensor]) -> bytes:
    """CHORD Eq. 12 output format: per-layer bit-widths [C_i] in LEVELS -> 2-bit codes packed into bytes."""
    lookup = torch.full((max(LEVELS) + 1,), -1, dtype=torch.int64)
    lookup[list(LEVELS)] = torch.arange(len(LEVELS))
    flat = torch.cat([torch.as_tensor(b, dtype=torch.int64).reshape(-1) for b in bits]) if bits else \
        torch.empty(0, dtype=torch.int64)  # fmt: skip
    if len(flat) and (int(flat.min()) < 0 or int(flat.max()) > max(LEVELS) or bool((lookup[flat] < 0).any())):
        raise ValueError(f"bit-widths must be in {LEVELS}")
    return pack_bits(lookup[flat], CODE_BITS).numpy().tobytes()


def decode_strategy(data: bytes, channel_counts: Sequence[int]) -> list[Tensor]:
    """Device side of CHORD Eq. 4: packed 2-bit codes -> per-layer bit-widths int64 [C_i] in LEVELS."""
    total = int(sum(channel_counts))
    expected = (total * CODE_BITS + 7) // 8
    if len(data) != expected:
        raise ValueError(f"strategy has {len(data)} bytes, {expected} expected for {total} channels")
    packed = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    codes = unpack_bits(packed, CODE_BITS, total)  # [total]
    levels = torch.tensor(LEVELS, dtype=torch.int64)[codes]
    return list(torch.split(levels, list(channel_counts)))


class DeviceResources(BaseModel):
    """R_d of CHORD Eq. 4: what the device can afford right now (None = no limit)."""

    max_bits: int | None = Field(None, ge=2, le=8, description="Highest bit-width any channel may use.")
    max_avg_bits: float | None = Field(None, ge=2.0, le=8.0, description="Budget on the weight-averaged bits.")


def average_bits(bits: Sequence[Tensor], fan_in: Sequence[int]) -> float:
    """Average bits per weight: sum_i sum_c bits[i][c] * fan_in[i] / number of weights."""
    total = sum(float(b.double().sum()) * k for b, k in zip(bits, fan_in, strict=True))
    weights = sum(len(b) * k for b, k in zip(bits, fan_in, strict=True))
    return total / max(1, weights)


def _lower(bits: Tensor, level: int) -> Tensor:
    """Channels at bit-width `level` drop to the next lower level in LEVELS."""
    lower = LEVELS[LEVELS.index(level) - 1]
    return torch.where(bits == level, torch.full_like(bits, lower), bits)


def resource_transform(bits: Sequence[Tensor], resources: DeviceResources, fan_in: Sequence[int]) -> list[Tensor]:
    """CHORD Eq. 4, sigma_d = T(sigma'_d, R_d): lower (never raise) precision to fit the device's resources."""
    out = [torch.as_tensor(b, dtype=torch.int64).clone() for b in bits]
    if resources.max_bits is not None:
        cap = max(level for level in LEVELS if level <= resources.max_bits)
        out = [b.clamp(max=cap) for b in out]
    if resources.max_avg_bits is not None:
        while average_bits(out, fan_in) > resources.max_avg_bits + 1e-9:
            top = max(int(b.max()) for b in out if len(b))
            if top == LEVELS[0]:
                break
            out = [_lower(b, top) for b in out]
    return out

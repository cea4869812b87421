"""The device's real mixed-precision inference path (CHORD Eq. 2: M_Q = Q(M, sigma_d)).

Each quantizable layer (`nn.Linear`, `nn.Conv2d`) is swapped for a `QuantizedLinear` / `QuantizedConv2d`
that stores its weight as packed unsigned integers: the channels of one bit-width b form one bit stream
of b bits per value (2-bit: 4 values per byte, 4-bit: 2 per byte, 6-bit: 4 values per 3 bytes, 8-bit: one
byte each), plus a float32 scale and a uint8 zero-point per output channel. The weight is dequantised on
the fly in every forward pass, so the float weights are never kept. Biases stay float32; embeddings and
LayerNorms are not quantized (CHORD quantizes linear and convolution layers only).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fake_quant import LEVELS, Scheme, dequantize, quantize_codes

QUANTIZABLE = (nn.Linear, nn.Conv2d)


# -- bit packing ---------------------------------------------------------------------------------------------
def pack_bits(values: Tensor, bits: int) -> Tensor:
    """Pack unsigned ints < 2^bits (any shape) into a little-endian bit stream: -> uint8 [ceil(n * bits / 8)]."""
    if not 1 <= bits <= 8:
        raise ValueError(f"cannot pack {bits}-bit values")
    v = values.reshape(-1).to(torch.int64)
    if len(v) and (int(v.min()) < 0 or int(v.max()) >= 2**bits):
        raise ValueError(f"values outside 0..{2**bits - 1} cannot be packed in {bits} bits")
    if bits == 8:
        return v.to(torch.uint8)
    stream = ((v.unsqueeze(1) >> torch.arange(bits)) & 1).reshape(-1)  # [n * bits], least significant first
    stream = F.pad(stream, (0, (-len(stream)) % 8))  # [8 * bytes]
    return (stream.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)  # [bytes]


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of `pack_bits`: uint8 [bytes] -> int64 [count]."""
    if bits == 8:
        return packed[:count].to(torch.int64)
    stream = ((packed.to(torch.int64).unsqueeze(1) >> torch.arange(8)) & 1).reshape(-1)[: count * bits]
    return (stream.view(count, bits) << torch.arange(bits)).sum(1)


# -- packed weight -------------------------------------------------------------------------------------------
class _PackedWeight(nn.Module):
    """A weight [C_out, ...] held as per-bit-width packed codes + per-channel scale / zero-point buffers."""

    def __init__(self, weight: Tensor, bits: int | Tensor, scheme: Scheme) -> None:
        super().__init__()
        self.shape = tuple(weight.shape)
        rows = weight.shape[0]
        bits_t = torch.as_tensor(bits, dtype=torch.int64).expand(rows).clone() if torch.as_tensor(bits).dim() == 0 \
            else torch.as_tensor(bits, dtype=torch.int64)  # fmt: skip
        q, scale, zero = quantize_codes(weight, bits_t, scheme)  # [C, K], [C], [C]
        self.fan_in = q.shape[1]
        self.register_buffer("bits", bits_t.to(torch.uint8))  # [C]
        self.register_buffer("scale", scale.float())  # [C]
        self.register_buffer("zero", zero.to(torch.uint8))  # [C]
        self.widths: list[int] = []
        for b in sorted(set(bits_t.tolist())):
            chosen = torch.nonzero(bits_t == b).squeeze(1)  # [n_b]
            self.widths.append(int(b))
            self.register_buffer(f"rows{b}", chosen.to(torch.int32))
            self.register_buffer(f"codes{b}", pack_bits(q[chosen], int(b)))

    def dequantize(self) -> Tensor:
        """Unpack every bit-width group and rebuild the float weight [C_out, ...] (on the fly)."""
        rows = torch.empty(self.shape[0], self.fan_in)  # [C, K]
        for b in self.widths:
            chosen = getattr(self, f"rows{b}").long()
            q = unpack_bits(getattr(self, f"codes{b}"), b, len(chosen) * self.fan_in).view(len(chosen), self.fan_in)
            rows[chosen] = dequantize(q, self.scale[chosen], self.zero[chosen])
        return rows.view(self.shape)

    def nbytes(self) -> int:
        """Bytes actually stored: packed codes + scales + zero-points + the channel index lists."""
        return sum(buf.numel() * buf.element_size() for name, buf in self.named_buffers() if name != "bits")


class QuantizedLinear(nn.Module):
    """`nn.Linear` with a packed mixed-precision weight, dequantised in every forward (CHORD Eq. 2-3)."""

    def __init__(self, linear: nn.Linear, bits: int | Tensor, scheme: Scheme = "minmax") -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = _PackedWeight(linear.weight.detach(), bits, scheme)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        return F.linear(x, self.packed.dequantize(), self.bias)


class QuantizedConv2d(nn.Module):
    """`nn.Conv2d` with a packed mixed-precision weight, dequantised in every forward (CHORD Eq. 2-3)."""

    def __init__(self, conv: nn.Conv2d, bits: int | Tensor, scheme: Scheme = "minmax") -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError("only zero-padded convolutions can be quantized")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.packed = _PackedWeight(conv.weight.detach(), bits, scheme)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:  # [N, C_in, H, W] -> [N, C_out, H', W']
        return F.conv2d(x, self.packed.dequantize(), self.bias, self.stride, self.padding, self.dilation, self.groups)


# -- model-level ---------------------------------------------------------------------------------------------
def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers CHORD quantizes, in module order: every `nn.Linear` and `nn.Conv2d` (name, module)."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)]


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def quantize_model(
    model: nn.Module, bits: int | Mapping[str, int | Tensor], scheme: Scheme = "minmax", inplace: bool = False
) -> nn.Module:
    """CHORD Eq. 2: a copy of `model` whose linear / conv layers hold packed weights at the given bit-widths.

    `bits` is one bit-width for every channel of every layer (uniform quantization) or a mapping from layer
    name to an int or a per-output-channel tensor [C_out] (a CHORD strategy). Layers missing from the
    mapping stay in full precision.
    """
    target = model if inplace else copy.deepcopy(model)
    for name, module in quantizable_layers(target):
        layer_bits = bits if isinstance(bits, int) else bits.get(name)
        if layer_bits is None:
            continue
        if isinstance(layer_bits, int) and layer_bits not in LEVELS:
            raise ValueError(f"bit-width {layer_bits} is not one of {LEVELS}")
        swapped = QuantizedLinear(module, layer_bits, scheme) if isinstance(module, nn.Linear) \
            else QuantizedConv2d(module, layer_bits, scheme)  # fmt: skip
        _set_module(target, name, swapped)
    target.eval()
    return target


@dataclass(frozen=True)
class MemoryReport:
    """Bytes of a model: its quantizable layers (weights + biases) and everything else."""

    layer_bytes: int
    other_bytes: int
    layer_fp32_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.layer_bytes + self.other_bytes

    @property
    def layer_compression(self) -> float:
        return self.layer_fp32_bytes / max(1, self.layer_bytes)

    def as_dict(self) -> dict[str, float]:
        return {"layer_bytes": self.layer_bytes, "other_bytes": self.other_bytes, "total_bytes": self.total_bytes,
                "layer_fp32_bytes": self.layer_fp32_bytes, "layer_compression": self.layer_compression}  # fmt: skip


def _tensor_bytes(tensors: list[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_report(model: nn.Module) -> MemoryReport:
    """Memory of `model` in bytes, counting quantized layers at their packed size (CHORD Table 2 memory)."""
    layer_bytes = fp32_bytes = 0
    counted: set[int] = set()
    for module in model.modules():
        if isinstance(module, QuantizedLinear | QuantizedConv2d):
            bias = [] if module.bias is None else [module.bias]
            layer_bytes += module.packed.nbytes() + _tensor_bytes(bias)
            fp32_bytes += 4 * (torch.Size(module.packed.shape).numel() + sum(b.numel() for b in bias))
            counted.update(id(t) for t in [*module.buffers(), *module.parameters()])
        elif isinstance(module, QUANTIZABLE):
            own = [module.weight] + ([] if module.bias is None else [module.bias])
            layer_bytes += _tensor_bytes(own)
            fp32_bytes += 4 * sum(t.numel() for t in own)
            counted.update(id(t) for t in own)
    rest = [t for t in [*model.parameters(), *model.buffers()] if id(t) not in counted]
    return MemoryReport(layer_bytes, _tensor_bytes(rest), fp32_bytes)

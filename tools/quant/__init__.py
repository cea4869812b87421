"""Channel-wise mixed-precision quantization of the device encoders (CHORD Eq. 2-4).

- `fake_quant`: per-output-channel fake quantization at 2/4/6/8 bits with a straight-through estimator
  (CHORD Eq. 3), used while training the cloud hypernetworks.
- `packed`: the real device path: weights stored as packed integers + per-channel scale and zero-point,
  dequantised on the fly, and a memory report in bytes (CHORD Eq. 2).
- `strategy`: the 2-bit-per-channel encoding of a strategy, its decoding on the device and the
  resource-aware transform T (CHORD Eq. 4).
"""

from .fake_quant import LEVELS, Scheme, channel_qparams, fake_quantize, quantize_codes
from .packed import (
    MemoryReport,
    QuantizedConv2d,
    QuantizedLinear,
    memory_report,
    pack_bits,
    quantizable_layers,
    quantize_model,
    unpack_bits,
)
from .strategy import (
    DeviceResources,
    average_bits,
    decode_strategy,
    encode_strategy,
    resource_transform,
)

__all__ = [
    "LEVELS", "DeviceResources", "MemoryReport", "QuantizedConv2d", "QuantizedLinear", "Scheme", "average_bits",
    "channel_qparams", "decode_strategy", "encode_strategy", "fake_quantize", "memory_report", "pack_bits",
    "quantizable_layers", "quantize_codes", "quantize_model", "resource_transform", "unpack_bits",
]  # fmt: skip

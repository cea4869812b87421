"""CHORD quantization primitives (Eq. 2-4): packing, fake quantization, packed layers, strategy codes, T."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tools.quant import (
    LEVELS,
    DeviceResources,
    QuantizedConv2d,
    QuantizedLinear,
    average_bits,
    decode_strategy,
    encode_strategy,
    fake_quantize,
    memory_report,
    pack_bits,
    quantize_codes,
    quantize_model,
    resource_transform,
    unpack_bits,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine: one thread is faster and steadier than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("count", [0, 1, 3, 5, 7, 64, 129])
def test_pack_unpack_round_trip(bits: int, count: int) -> None:
    values = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(count + bits))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8
    assert len(packed) == (count * bits + 7) // 8  # 2-bit: 4 a byte, 4-bit: 2 a byte, 8-bit: 1 a byte
    assert torch.equal(unpack_bits(packed, bits, count), values)


def test_pack_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([4]), 2)


@pytest.mark.parametrize("scheme", ["minmax", "symmetric"])
def test_fake_quant_levels_error_and_ste(scheme: str) -> None:
    w = torch.randn(7, 33, generator=torch.Generator().manual_seed(0), requires_grad=True)
    errors = []
    for b in LEVELS:
        wq = fake_quantize(w, b, scheme)  # type: ignore[arg-type]
        assert wq.shape == w.shape
        assert all(len(torch.unique(row)) <= 2**b for row in wq.detach())
        errors.append(float((wq - w).detach().abs().mean()))
    assert errors == sorted(errors, reverse=True)  # more bits, less error
    fake_quantize(w, 2, scheme).sum().backward()  # type: ignore[arg-type]
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through


def test_per_channel_bits_are_honoured() -> None:
    w = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    bits = torch.tensor([2, 4, 6, 8])
    q, scale, zero = quantize_codes(w, bits)
    for row, b in enumerate(bits.tolist()):
        assert int(q[row].max()) < 2**b and int(q[row].min()) >= 0
    assert scale.shape == zero.shape == (4,)


def _mixed_bits(channels: int, seed: int) -> torch.Tensor:
    idx = torch.randint(0, len(LEVELS), (channels,), generator=torch.Generator().manual_seed(seed))
    return torch.tensor(LEVELS)[idx]


def test_packed_layers_match_fake_quantization() -> None:
    torch.manual_seed(0)
    linear, conv = nn.Linear(37, 19), nn.Conv2d(1, 5, (3, 7))
    lb, cb = _mixed_bits(19, 1), _mixed_bits(5, 2)
    x = torch.randn(4, 6, 37)
    ql = QuantizedLinear(linear, lb)
    expected = nn.functional.linear(x, fake_quantize(linear.weight, lb), linear.bias)
    assert torch.allclose(ql(x), expected, atol=1e-6)
    image = torch.randn(3, 1, 5, 7)
    qc = QuantizedConv2d(conv, cb)
    expected = nn.functional.conv2d(image, fake_quantize(conv.weight, cb), conv.bias)
    assert torch.allclose(qc(image), expected, atol=1e-6)


def test_quantize_model_swaps_layers_and_memory_falls() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 192), nn.ReLU(), nn.Linear(192, 64))
    full = memory_report(model)
    assert full.layer_bytes == full.layer_fp32_bytes
    reports = {b: memory_report(quantize_model(model, b)) for b in (8, 4, 2)}
    assert reports[8].layer_bytes < full.layer_bytes / 3
    assert reports[2].layer_bytes < reports[4].layer_bytes < reports[8].layer_bytes
    q = quantize_model(model, {"0": _mixed_bits(192, 3)})  # layer "2" stays full precision
    assert isinstance(q[0], QuantizedLinear) and isinstance(q[2], nn.Linear)
    assert isinstance(model[0], nn.Linear)  # the original is untouched
    x = torch.randn(5, 64)
    assert torch.allclose(quantize_model(model, 8)(x), model(x), atol=0.05)


@pytest.mark.parametrize("counts", [[1], [3, 5], [192, 64, 7], [4, 16, 16, 16, 16, 16, 64, 64]])
def test_strategy_round_trip(counts: list[int]) -> None:
    bits = [_mixed_bits(c, i) for i, c in enumerate(counts)]
    data = encode_strategy(bits)
    assert len(data) == (2 * sum(counts) + 7) // 8  # 2 bits per channel
    decoded = decode_strategy(data, counts)
    assert all(torch.equal(a, b) for a, b in zip(decoded, bits, strict=True))


def test_strategy_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_strategy([torch.tensor([3])])
    with pytest.raises(ValueError):
        decode_strategy(b"\x00", [5])


def test_resource_transform_only_lowers_precision() -> None:
    counts, fan_in = [192, 64, 64], [64, 64, 256]
    bits = [_mixed_bits(c, 10 + i) for i, c in enumerate(counts)]
    same = resource_transform(bits, DeviceResources(), fan_in)
    assert all(torch.equal(a, b) for a, b in zip(same, bits, strict=True))
    for resources in [DeviceResources(max_bits=4), DeviceResources(max_avg_bits=3.0),
                      DeviceResources(max_bits=6, max_avg_bits=4.5), DeviceResources(max_avg_bits=8.0)]:  # fmt: skip
        out = resource_transform(bits, resources, fan_in)
        assert all(bool((o <= b).all()) for o, b in zip(out, bits, strict=True))
        assert all(set(o.tolist()) <= set(LEVELS) for o in out)
        if resources.max_bits is not None:
            assert max(int(o.max()) for o in out) <= resources.max_bits
        if resources.max_avg_bits is not None:
            assert average_bits(out, fan_in) <= resources.max_avg_bits + 1e-9
    assert average_bits([torch.tensor([2, 8])], [10]) == 5.0

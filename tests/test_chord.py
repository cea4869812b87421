"""CHORD end to end on ML-100K: profiler, hypernetworks, tiering, strategy message, device path, training."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.chord import (
    Chord,
    ChordConfig,
    FakeQuantChordScorer,
    MixedPrecisionEncoder,
    StrategyError,
    apply_strategy,
    chord_loss,
    layer_adjust,
    level_bits,
    load_chord,
    new_chord,
    save_chord,
    strategy_average_bits,
    strategy_bits,
    tier,
    tier_counts,
)
from tools.chord.model import _samples
from tools.data import Splits
from tools.embeddings import ItemSemantics
from tools.encoders import SequentialEncoder, build_encoder, pad_left
from tools.protocol import ChordStrategy
from tools.quant import LEVELS, DeviceResources, QuantizedConv2d, QuantizedLinear, memory_report


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine: one thread is faster and steadier than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["sasrec", "caser"])
def encoder(request: pytest.FixtureRequest, ml100k_semantics: ItemSemantics) -> SequentialEncoder:
    torch.manual_seed(0)
    table = ml100k_semantics.table
    model = build_encoder(request.param, table.shape[0] - 1, item_table=table, max_len=50)
    return model.eval()


@pytest.fixture(scope="module")
def chord(encoder: SequentialEncoder) -> Chord:
    return new_chord(encoder, ChordConfig(beta=0.25, seed=0))


def _histories(splits: Splits, n: int) -> list[np.ndarray]:
    return [inst.history for inst in splits.test[:n]]


def test_tiering_respects_beta_and_passes_gradients() -> None:
    sens = torch.rand(3, 50, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for beta in (0.0, 0.1, 0.25, 0.5):
        levels = tier(sens, beta)  # [3, 50, 4]
        bits = level_bits([levels])[0]
        k8, k4 = tier_counts(50, beta)
        assert ((bits == 8).sum(1) == k8).all() and ((bits == 4).sum(1) == k4).all()
        assert ((bits == 2).sum(1) == 50 - k8 - k4).all()
        top = sens.detach().argsort(dim=1, descending=True)[:, :k8]  # the most sensitive channels get 8 bits
        assert (bits.gather(1, top) == 8).all()
    (tier(sens, 0.25) * torch.tensor(LEVELS, dtype=torch.float32)).sum().backward()
    assert sens.grad is not None and float(sens.grad.abs().sum()) > 0  # straight-through estimator


def test_layer_adjustment_moves_whole_layers_one_level() -> None:
    base = [tier(torch.rand(2, c), 0.25) for c in (8, 8, 8, 8)]
    scores = torch.tensor([[3.0, 0.0, 1.0, -2.0], [-1.0, 0.5, 2.0, 0.0]])
    adjusted = level_bits(layer_adjust(base, scores, n_adjust=1))
    before = level_bits(base)
    up = {2: 4, 4: 6, 6: 8, 8: 8}
    down = {2: 2, 4: 2, 6: 4, 8: 6}
    for user, (boost, squeeze) in enumerate([(0, 3), (2, 0)]):
        assert adjusted[boost][user].tolist() == [up[b] for b in before[boost][user].tolist()]
        assert adjusted[squeeze][user].tolist() == [down[b] for b in before[squeeze][user].tolist()]
        others = set(range(4)) - {boost, squeeze}
        assert all(torch.equal(adjusted[i][user], before[i][user]) for i in others)


def test_users_get_different_strategies(chord: Chord, ml100k_splits: Splits) -> None:
    z = chord.profile(_histories(ml100k_splits, 8))  # Eq. 6: [8, l]
    assert z.shape == (8, chord.config.profile_dim)
    bits = chord.bits(z)
    flat = torch.cat([b for b in bits], dim=1)  # [8, channels]
    assert len({tuple(row.tolist()) for row in flat}) > 1
    for b, spec in zip(bits, chord.specs, strict=True):  # Gamma + Lambda: levels in (2, 4, 6, 8)
        assert b.shape == (8, spec.channels) and set(b.unique().tolist()) <= set(LEVELS)


def test_strategy_message_decodes_and_is_small(chord: Chord, ml100k_splits: Splits) -> None:
    history = ml100k_splits.test[0].history
    strategy = chord.strategy_for_user(history)
    again = ChordStrategy.model_validate_json(strategy.model_dump_json())  # what crosses the boundary
    expected = [b[0] for b in chord.bits(chord.profile([history]))]
    assert all(torch.equal(a, b) for a, b in zip(strategy_bits(again), expected, strict=True))
    channels = sum(s.channels for s in chord.specs)
    weights = sum(s.channels * s.fan_in for s in chord.specs)
    assert again.payload_bits == 8 * ((2 * channels + 7) // 8)
    assert 32 * weights / again.payload_bits >= 16
    assert 2.0 <= strategy_average_bits(again, chord.specs) <= 8.0


def test_packed_encoder_matches_fake_quantized(chord: Chord, encoder: SequentialEncoder, ml100k_splits: Splits) -> None:
    histories = _histories(ml100k_splits, 3)
    fake = FakeQuantChordScorer(chord, encoder).score_histories(histories)  # [4, V + 1]
    for row, history in enumerate(histories):
        device = apply_strategy(encoder, chord.strategy_for_user(history))
        assert any(isinstance(m, QuantizedLinear | QuantizedConv2d) for m in device.modules())
        packed = device.score_histories([history])[0]
        assert torch.allclose(packed[1:], fake[row, 1:], atol=1e-4, rtol=1e-4)
        full, small = memory_report(encoder), memory_report(device)
        assert small.layer_bytes < full.layer_bytes / 3 and small.total_bytes < full.total_bytes


def test_apply_strategy_refuses_other_layers(chord: Chord, encoder: SequentialEncoder, ml100k_splits: Splits) -> None:
    strategy = chord.strategy_for_user(ml100k_splits.test[0].history)
    wrong = strategy.model_copy(update={"layers": ["nope"] + strategy.layers[1:]})
    with pytest.raises(StrategyError):
        apply_strategy(encoder, wrong)


def test_save_and_load_give_the_same_strategy(
    chord: Chord, encoder: SequentialEncoder, tmp_path: Path, ml100k_splits: Splits
) -> None:
    history = ml100k_splits.test[1].history
    loaded = load_chord(save_chord(tmp_path / "chord.pt", chord, encoder), encoder)
    assert loaded.strategy_for_user(history) == chord.strategy_for_user(history)
    other = copy.deepcopy(encoder)
    with torch.no_grad():
        next(m for m in other.modules() if isinstance(m, torch.nn.Linear)).weight.add_(0.1)
    with pytest.raises(StrategyError):
        load_chord(tmp_path / "chord.pt", other)  # a CHORD is only valid for the weights it was trained on


def test_training_steps_reduce_the_loss(encoder: SequentialEncoder, ml100k_splits: Splits) -> None:
    torch.manual_seed(0)
    chord = new_chord(encoder, ChordConfig(seed=0))
    mixed = MixedPrecisionEncoder(encoder, chord.specs)
    histories, targets = _samples(ml100k_splits.train, np.random.default_rng(0), 32, encoder.max_len)
    seqs = pad_left(histories, encoder.max_len)
    params = list(chord.modules().parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2)
    frozen = [p.detach().clone() for p in encoder.parameters()]
    losses = []
    for _ in range(12):
        loss = chord_loss(chord, mixed, seqs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(frozen, encoder.parameters(), strict=True))  # encoder frozen


def test_device_transform_lowers_the_applied_strategy(
    chord: Chord, encoder: SequentialEncoder, ml100k_splits: Splits
) -> None:
    strategy = chord.strategy_for_user(ml100k_splits.test[2].history)
    device = apply_strategy(encoder, strategy, DeviceResources(max_bits=4))  # CHORD Eq. 4
    applied = [m.packed.bits for m in device.modules() if isinstance(m, QuantizedLinear | QuantizedConv2d)]
    assert len(applied) == len(strategy.layers)
    for got, sent in zip(applied, strategy_bits(strategy), strict=True):
        assert bool((got.long() <= sent).all()) and int(got.max()) <= 4

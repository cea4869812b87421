"""CDA4Rec Eq. 5 trained jointly (`tools.fused_tower`): the tower starts at the encoder alone, e_str is the
encoder's Eq. 4 on each example's history, and training finds what the abstract says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tools.encoders import build_encoder
from tools.fused_tower import FusedTower, item_table, train_tower, with_structured
from tools.metrics import metrics_from_ranks, target_ranks
from tools.semantic_head import HeadConfig, SummaryExamples, head_ranks

NUM_ITEMS, TEXT_DIM = 60, 24


def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder("sasrec", NUM_ITEMS, dim=16, max_len=10).eval()


def _examples(rng: np.random.Generator, directions: np.ndarray, count: int) -> SummaryExamples:
    """Each example's history is random; its text vector sits near its target's direction (the abstract names
    the target; the encoder, untrained, knows nothing)."""
    targets = rng.integers(1, NUM_ITEMS + 1, size=count)
    raw = directions[targets - 1] + 0.2 * rng.normal(size=(count, TEXT_DIM))
    seen = [rng.choice(np.setdiff1d(np.arange(1, NUM_ITEMS + 1), [t]), size=5, replace=False) for t in targets]
    return SummaryExamples(raw.astype(np.float32), targets.astype(np.int64), seen)


def test_the_tower_starts_at_the_encoder_alone_and_reads_e_str_from_the_history():
    encoder = _encoder()
    rng = np.random.default_rng(0)
    examples = _examples(rng, rng.normal(size=(NUM_ITEMS, TEXT_DIM)), 50)
    fused = with_structured(examples, encoder, chunk=16)
    np.testing.assert_allclose(fused.raw[:, TEXT_DIM:], encoder.encode(examples.seen).numpy(), atol=1e-5)
    np.testing.assert_array_equal(fused.raw[:, :TEXT_DIM], examples.raw)
    alone = torch.from_numpy(fused.raw[:, TEXT_DIM:]) @ torch.from_numpy(item_table(encoder)).T
    mask = torch.zeros_like(alone, dtype=torch.bool)
    for row, items in enumerate(examples.seen):
        mask[row, torch.from_numpy(items)] = True
    expected = target_ranks(alone, torch.from_numpy(examples.targets), mask).numpy()
    for beta in (0.1, 0.5, 0.9):
        tower = FusedTower(TEXT_DIM, encoder.dim, hidden=8, beta=beta).eval()
        np.testing.assert_array_equal(head_ranks(tower, fused, item_table(encoder)), expected)


@pytest.mark.parametrize("loss", ["ce", "bpr"])
def test_training_learns_what_the_abstract_says(loss):
    encoder = _encoder()
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(NUM_ITEMS, TEXT_DIM))
    train = with_structured(_examples(rng, directions, 1500), encoder)
    valid = with_structured(_examples(rng, directions, 200), encoder)
    config = HeadConfig(loss=loss, hidden=64, epochs=15, lr=5e-3, patience=15, negatives=8)
    result = train_tower(train, valid, encoder, beta=0.5, config=config, progress=False)
    assert result.fitted.initial_valid["NDCG@10"] < 0.3  # the untrained encoder alone
    assert result.fitted.best_valid["NDCG@10"] > 0.6 and result.fitted.best_epoch > 0
    assert metrics_from_ranks(head_ranks(result.tower, valid, item_table(encoder))) == result.fitted.best_valid


def test_beta_outside_the_unit_interval_is_refused():
    with pytest.raises(ValueError, match="beta"):
        FusedTower(TEXT_DIM, 16, hidden=8, beta=0.0)


def test_older_masked_items_change_the_mask_but_not_e_str():
    """A test example's `seen` may hold its user's items older than the encoder's window (`EvalInstance.masked`:
    those first, then the newest max_len): e_str is the window's, the ranking leaves all of them out."""
    encoder = _encoder()  # max_len 10
    rng = np.random.default_rng(2)
    window = rng.choice(np.arange(1, 31), size=10, replace=False)
    older = np.unique(rng.choice(np.arange(31, NUM_ITEMS + 1), size=8, replace=False))
    base = SummaryExamples(np.zeros((1, TEXT_DIM), np.float32), np.array([window[0]], np.int64), [window])
    both = SummaryExamples(base.raw, base.targets, [np.concatenate([older, window])])
    np.testing.assert_allclose(with_structured(both, encoder).raw, with_structured(base, encoder).raw, atol=1e-6)
    tower = FusedTower(TEXT_DIM, encoder.dim, hidden=8, beta=0.5).eval()
    table = item_table(encoder)
    scores = torch.from_numpy(with_structured(base, encoder).raw[:, TEXT_DIM:]) @ torch.from_numpy(table).T
    above = int((scores[0, older] > scores[0, window[0]]).sum())  # older items the target would otherwise trail
    ranks_base = head_ranks(tower, with_structured(base, encoder), table)
    ranks_both = head_ranks(tower, with_structured(both, encoder), table)
    assert above > 0 and ranks_base[0] - ranks_both[0] == above

"""SCaLRec pieces: the reliability estimate and the calibrator learning from simulated staleness."""

from __future__ import annotations

import numpy as np

from tools.calibration import (
    ReliabilityPolicy,
    SemanticCalibrator,
    load_calibrator,
    percentile_ranks,
    recency_mean,
    save_calibrator,
    staleness_samples,
    train_calibrator,
)


def _table(n=50, d=8, seed=0):
    rng = np.random.default_rng(seed)
    table = np.zeros((n + 1, d), dtype=np.float32)
    table[1:] = rng.normal(size=(n, d))
    return table


def test_percentile_ranks_and_policy():
    table = _table()
    e_sem = table[3].copy()
    scores = table[1:] @ e_sem
    best, worst = int(np.argmax(scores)) + 1, int(np.argmin(scores)) + 1
    assert percentile_ranks(e_sem, np.array([best]), table)[0] == 1.0
    assert percentile_ranks(e_sem, np.array([worst]), table)[0] == 0.0
    policy = ReliabilityPolicy(min_reliability=0.75, max_new=3)
    assert policy.judge(e_sem, np.array([], dtype=np.int64), table).reliable
    assert policy.judge(e_sem, np.array([best]), table).reliable
    assert not policy.judge(e_sem, np.array([worst]), table).reliable
    assert not policy.judge(e_sem, np.array([best] * 4), table).reliable  # too many new interactions


def test_recency_mean_weights_newest_most():
    table = _table()
    mean = recency_mean(np.array([1, 2]), table, half_life=1.0)
    np.testing.assert_allclose(mean, (0.5 * table[1] + table[2]) / 1.5, rtol=1e-5)


def test_calibrator_learns_to_follow_new_items(tmp_path):
    """Users drift: the next item sits near the newest items, not near the stale embedding."""
    table = _table(n=60, d=8, seed=1)
    rng = np.random.default_rng(2)
    sequences = [rng.integers(1, 61, size=30) for _ in range(150)]
    for seq in sequences:  # make the last part of each sequence a tight cluster around one item
        anchor = int(rng.integers(1, 61))
        near = np.argsort(-(table[1:] @ table[anchor]))[:3] + 1
        seq[15:] = rng.choice(near, size=15)
    stale = lambda hs: np.stack([table[h[:5]].mean(0) for h in hs])  # noqa: E731  stale: the oldest items
    samples = staleness_samples(sequences, stale, max_new=6, per_user=2, seed=0)
    samples = [s for s in samples if len(s.new_items) >= 3]
    model = train_calibrator(samples, table, epochs=40)

    def hit_rate(calibrate: bool) -> float:
        hits = 0
        for s in samples:
            e = model.calibrate(s.e_sem, s.new_items, table) if calibrate else s.e_sem
            top = np.argsort(-(table[1:] @ e))[:5] + 1
            hits += int(s.target in top)
        return hits / len(samples)

    assert hit_rate(True) > hit_rate(False) + 0.1
    save_calibrator(model, tmp_path / "c.pt", "k1")
    assert isinstance(load_calibrator(tmp_path / "c.pt", "k1"), SemanticCalibrator)
    assert load_calibrator(tmp_path / "c.pt", "other") is None

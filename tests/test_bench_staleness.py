"""The staleness benchmark's ranking helpers (evals/bench_staleness): history masked, ties against the target."""

from __future__ import annotations

import numpy as np

from evals.bench_staleness import semantic_ranks, target_percentile


def test_semantic_ranks_mask_the_history_and_percentiles_order_the_catalog() -> None:
    table = np.array([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)  # [V + 1 = 5, 2]
    e_sem = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    targets = np.array([2, 2])
    ranks = semantic_ranks(e_sem, table, [np.array([3]), np.array([1])], targets)
    assert ranks.tolist() == [1, 0]  # item 1 outranks the target unless it is in the history
    pct = target_percentile(e_sem, table, targets)
    np.testing.assert_allclose(pct, [2 / 3, 2 / 3])  # above items 3 and 4, below item 1

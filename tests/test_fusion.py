"""Fusion and request decision: CDA4Rec Eq. 5-7, LSC4Rec Eq. 9-12, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tools.fusion import fuse_scores, inconsistency, minmax, rank_step, should_request, threshold_for_load


def test_minmax_is_eq9():
    np.testing.assert_allclose(minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(minmax(np.array([5.0, 5.0])), [0.0, 0.0])


def test_fusion_weights_by_beta():
    sem, struct = np.array([0.0, 1.0, 2.0]), np.array([10.0, 0.0, 5.0])
    np.testing.assert_allclose(fuse_scores(sem, struct, 1.0), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(fuse_scores(sem, struct, 0.0), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(fuse_scores(sem, struct, 0.5), [0.5, 0.25, 0.75])
    np.testing.assert_allclose(fuse_scores(sem, None, 0.3), [0.0, 0.5, 1.0])


def test_inconsistency_is_eq11_normalised():
    assert inconsistency([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    # reversed list of 4: shifts 3,1,1,3 -> mean 2 -> / n=4 -> 0.5
    assert inconsistency([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(0.5)
    # one swap of neighbours: shifts 1,1,0,0 -> mean 0.5 -> /4
    assert inconsistency([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(0.125)


def test_threshold_sends_the_target_share_to_the_cloud():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    threshold = threshold_for_load(scores, 0.1)
    share = np.mean([should_request(s, threshold) for s in scores])
    assert 0.09 <= share <= 0.11
    with pytest.raises(ValueError):
        threshold_for_load(scores, 0.0)


def test_rank_step_reports_disagreement():
    ids = np.array([10, 20, 30])
    structured = {10: 1.0, 20: 2.0, 30: 3.0}

    def scores(candidates):
        return np.array([structured[int(c)] for c in candidates])

    ranking = rank_step(ids, np.array([3.0, 2.0, 1.0]), 0.0, [], scores)
    assert ranking.items.tolist() == [30, 20, 10] and ranking.inconsistency > 0.3
    ranking = rank_step(ids, np.array([3.0, 2.0, 1.0]), 0.5, [], lambda c: -scores(c))
    assert ranking.items.tolist() == [10, 20, 30] and ranking.inconsistency == 0.0


def test_rank_step_masks_seen_items_before_scoring_and_breaks_ties_by_id():
    ids = np.array([7, 3, 5, 9])
    asked: list[list[int]] = []

    def scores(candidates):
        asked.append(candidates.tolist())
        return np.zeros(len(candidates))

    ranking = rank_step(ids, np.array([1.0, 2.0, 2.0, 5.0]), 1.0, [9], scores)
    assert 9 not in ranking.items and asked == [[7, 3, 5]]
    assert ranking.items.tolist() == [3, 5, 7] and ranking.position(5) == 1 and ranking.position(9) is None


def test_rank_step_without_structured_scores_ranks_by_semantics_whatever_beta():
    ranking = rank_step(np.array([1, 2, 3]), np.array([0.1, 0.9, 0.5]), 0.0, [])
    assert ranking.items.tolist() == [2, 3, 1]

"""Full-ranking HR@k / NDCG@k against hand-computed cases (evals/metrics.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from evals.rec import full_ranking_ranks
from tools.data import EvalInstance
from tools.metrics import PopularityScorer, evaluate, hit_ratio, metrics_from_ranks, ndcg, seen_mask, target_ranks


def test_rank_counts_items_scoring_higher_and_ignores_padding() -> None:
    scores = torch.tensor([[10.0, 0.1, 0.5, 0.3, 0.9]])  # column 0 = padding, would be first otherwise
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2]  # items 2 (0.5) and 4 (0.9) are above
    assert target_ranks(scores, torch.tensor([4])).tolist() == [0]


def test_ties_count_against_the_target() -> None:
    scores = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]


def test_mask_removes_items_but_never_the_target() -> None:
    scores = torch.tensor([[0.0, 0.1, 0.5, 0.3, 0.9]])
    mask = torch.tensor([[False, False, False, False, True]])  # item 4 (0.9) masked: only item 2 is above
    assert target_ranks(scores, torch.tensor([3]), mask).tolist() == [1]
    mask = torch.tensor([[False, False, False, True, True]])  # the target 3 masked too: ignored for the target
    assert target_ranks(scores, torch.tensor([3]), mask).tolist() == [1]


def test_seen_mask_marks_each_rows_items_and_nothing_else() -> None:
    mask = seen_mask([np.array([1, 3]), [], [4, 4, 2]], width=6)
    assert mask.dtype == torch.bool and mask.shape == (3, 6)
    assert mask.nonzero().tolist() == [[0, 1], [0, 3], [2, 2], [2, 4]]
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.8, 0.2, 0.3]] * 3)
    # row 0: items 1 and 3 masked, nothing left above target 5; row 1: items 1 and 3 above it; row 2: the target
    # (4) is among the seen items and stays ranked (items 1, 3 and 5 above it)
    assert target_ranks(scores, torch.tensor([5, 5, 4]), mask).tolist() == [0, 2, 3]


def test_hr_and_ndcg_hand_computed() -> None:
    ranks = np.array([0, 2, 7, 12])
    assert hit_ratio(ranks, 5) == pytest.approx(0.5)
    assert hit_ratio(ranks, 10) == pytest.approx(0.75)
    assert ndcg(ranks, 5) == pytest.approx((1.0 + 1.0 / math.log2(4)) / 4)  # 0.375
    assert ndcg(ranks, 10) == pytest.approx((1.0 + 0.5 + 1.0 / math.log2(9)) / 4)  # 0.45387
    assert metrics_from_ranks(ranks) == {
        "HR@5": pytest.approx(0.5), "NDCG@5": pytest.approx(0.375),
        "HR@10": pytest.approx(0.75), "NDCG@10": pytest.approx(0.453866, abs=1e-6),
    }  # fmt: skip


def _instance(user: int, history: list[int], target: int) -> EvalInstance:
    hist = np.array(history, dtype=np.int64)
    return EvalInstance(user, hist, np.zeros_like(hist), target, "test", "", "none")


class FixedScorer:
    """Scores item i as i (higher id = better), for every user."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def score_histories(self, histories):
        return torch.arange(self.num_items + 1, dtype=torch.float32).expand(len(histories), -1).clone()


def test_evaluate_full_ranking_and_seen_masking_are_stated() -> None:
    # 20 items, target 15: items 16..20 are above it -> rank 5 (HR@5 = 0, HR@10 = 1).
    instances = [_instance(0, [18, 19, 3], 15), _instance(1, [1, 2], 20)]
    plain = evaluate(FixedScorer(20), instances)
    assert plain.ranks.tolist() == [5, 0]
    assert plain.metrics["HR@5"] == pytest.approx(0.5) and plain.metrics["HR@10"] == pytest.approx(1.0)
    assert plain.metrics["NDCG@10"] == pytest.approx((1.0 / math.log2(7) + 1.0) / 2)
    assert "NOT masked" in plain.line() and "all 20 items" in plain.protocol
    # masking the seen items 18 and 19 lifts the first target to rank 3
    masked = evaluate(FixedScorer(20), instances, mask_seen=True)
    assert masked.ranks.tolist() == [3, 0] and masked.masked_seen
    assert "masked" in masked.protocol and "NOT" not in masked.protocol
    # items older than the history's max_len cut (16, 17) are masked too
    cut = [replace(instances[0], older=np.array([16, 17])), instances[1]]
    assert evaluate(FixedScorer(20), cut, mask_seen=True).ranks.tolist() == [1, 0]
    assert evaluate(FixedScorer(20), cut).ranks.tolist() == [5, 0]  # and nothing when masking is off


def test_eval_rec_full_ranking_masks_items_older_than_the_history() -> None:
    scores = FixedScorer(20).score_histories([[], []]).numpy()
    instances = [_instance(0, [18, 19, 3], 15), replace(_instance(1, [18], 15), older=np.array([16, 19, 20]))]
    assert full_ranking_ranks(scores, instances).tolist() == [3, 1]  # 17 above the second target, 16/18-20 masked


def test_popularity_scorer_ranks_by_training_counts() -> None:
    train = {0: np.array([1, 2, 2]), 1: np.array([2, 3])}
    scorer = PopularityScorer(train, num_items=4)
    scores = scorer.score_histories([np.array([1])])
    assert scores.shape == (1, 5)
    assert target_ranks(scores, torch.tensor([2])).tolist() == [0]
    assert target_ranks(scores, torch.tensor([4])).tolist() == [3]  # never seen: last (ties with nobody)


def test_rank_differences_are_a_minus_b_per_metric() -> None:
    from tools.metrics import rank_differences

    better, worse = np.array([0, 0, 3, 20]), np.array([0, 12, 3, 20])  # one user moves from rank 12 to the top
    same = rank_differences(better, better)
    assert same == {"HR@10": "+0.0000 [+0.0000, +0.0000]", "NDCG@10": "+0.0000 [+0.0000, +0.0000]"}
    assert rank_differences(better, worse, ("HR@10",))["HR@10"].startswith("+0.2500")
    assert rank_differences(worse, better, ("HR@10",))["HR@10"].startswith("-0.2500")

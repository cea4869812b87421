"""LSC4Rec 3.2.2 cooperative training: negatives come from the cloud's candidate lists, never the user's items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.pipeline import candidate_pools
from graph.runtime import evaluation_agents
from tools.cooperative import _pool_negatives, cooperative_finetune
from tools.encoders import build_encoder


def test_pool_negatives_come_only_from_each_users_pool():
    rng = np.random.default_rng(0)
    pools = [np.array([5, 6, 7]), np.array([42]), np.array([], dtype=np.int64)]
    neg = _pool_negatives(pools, (3, 4, 5), num_items=100, rng=rng)
    assert set(neg[0].flatten().tolist()) <= {5, 6, 7}
    assert set(neg[1].flatten().tolist()) == {42}
    assert ((neg[2] >= 1) & (neg[2] <= 100)).all()


def test_cooperative_finetune_on_cloud_candidates(settings, built_index, ml100k_splits, ml100k_semantics):
    device, clouds = evaluation_agents(settings, built_index)
    train = dict(list(ml100k_splits.train.items())[:60])
    pools = candidate_pools(device, clouds["rule"], train, progress=False)
    assert set(pools) == {u for u, s in train.items() if len(s) >= 2}
    for user, pool in pools.items():
        assert len(pool) > 0 and not set(pool.tolist()) & set(train[user].tolist())
    torch.manual_seed(0)
    table = ml100k_semantics.table
    model = build_encoder("sasrec", table.shape[0] - 1, item_table=table, max_len=50)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    splits = ml100k_splits.__class__(train, ml100k_splits.valid[:80], ml100k_splits.test, ml100k_splits.fewshot,
                                     ml100k_splits.heldout_users, ml100k_splits.max_len)  # fmt: skip
    result = cooperative_finetune(model, splits, pools, epochs=2, patience=2, lr=1e-3, batch_size=32,
                                  max_valid=None, progress=False)  # fmt: skip
    assert result.epochs_run >= 1
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    if result.best_epoch > 0:  # an epoch beat the start: its weights are kept and it scored higher
        assert changed and result.best_valid["NDCG@10"] > result.before["NDCG@10"]
    else:  # nothing beat the start: the model is returned unchanged
        assert not changed and result.best_valid == result.before


class _Fixed(torch.nn.Module):
    """A scorer whose item scores are fixed (item id / 100), to check the within-candidates criterion."""

    def __init__(self, items: int) -> None:
        super().__init__()
        self.item_emb = torch.nn.Embedding(items + 1, 2)

    def score_histories(self, histories):
        return torch.arange(self.item_emb.num_embeddings, dtype=torch.float32).repeat(len(histories), 1) / 100


def test_within_candidates_ranks_the_target_among_the_clouds_candidates_only():
    from tools.cooperative import within_candidates
    from tools.data import EvalInstance

    def case(user: int, target: int) -> EvalInstance:
        return EvalInstance(user, np.array([1, 2]), np.array([0, 1]), target, "valid", "", "none")

    pools = {0: np.array([50, 10, 30]), 1: np.array([50, 60]), 2: np.array([], dtype=np.int64)}
    metrics = within_candidates(_Fixed(100), [case(0, 30), case(1, 20), case(2, 5)], pools)
    # user 0: 30 is second of {50, 30, 10} (rank 1, a hit); user 1: 20 was not retrieved; user 2: no candidates
    assert metrics["HR@10"] == pytest.approx(1 / 3)
    assert metrics["NDCG@10"] == pytest.approx((1 / np.log2(3)) / 3)


def test_the_shelf_follows_the_cooperative_decision(tmp_path, ml100k):
    from agents.device.encoders import EncoderShelf
    from tools.checkpoints import save_checkpoint
    from tools.cooperative import choice_path, cooperative_decision, write_choice
    from tools.training import TrainConfig

    shelf = EncoderShelf(tmp_path, ml100k)
    base = shelf.base_path("SASRec")
    model = build_encoder("sasrec", ml100k.catalog.num_items, max_len=20)
    save_checkpoint(base, model, ml100k, TrainConfig())
    cooperative = base.with_name("sasrec-coop.pt")
    assert shelf.path("SASRec") == base  # no decision yet
    write_choice(base, cooperative, {"NDCG@10": 0.1}, {"NDCG@10": 0.2}, users=10)
    assert shelf.path("SASRec") == base  # it won, but its file is missing: the base one
    save_checkpoint(cooperative, model, ml100k, TrainConfig(loss="bpr"))
    assert shelf.path("SASRec") == cooperative
    assert EncoderShelf(tmp_path, ml100k, follow_cooperative=False).path("SASRec") == base
    torch.manual_seed(1)
    save_checkpoint(base, build_encoder("sasrec", ml100k.catalog.num_items, max_len=20), ml100k, TrainConfig())
    assert shelf.path("SASRec") == base  # a new base: the decision was made against another one
    write_choice(base, cooperative, {"NDCG@10": 0.1}, {"NDCG@10": 0.2}, users=10)
    assert shelf.path("SASRec") == cooperative
    assert write_choice(base, cooperative, {"NDCG@10": 0.2}, {"NDCG@10": 0.2}, users=10)["use"] == "base"  # a tie
    assert shelf.path("SASRec") == base
    assert cooperative_decision(base) == (cooperative, False)  # it lost, but it exists: eval rec shows it
    cooperative.unlink()
    assert cooperative_decision(base) is None
    choice_path(base).write_text("{not json")
    assert shelf.path("SASRec") == base  # an unreadable decision: the base checkpoint


def test_candidate_softmax_is_cross_entropy_over_the_positive_and_its_candidates():
    from tools.cooperative import candidate_softmax_loss

    torch.manual_seed(0)
    items = torch.randn(11, 4)
    user = torch.randn(3, 4)
    positives = torch.tensor([1, 2, 3])
    negatives = torch.tensor([[4, 5], [6, 2], [8, 9]])  # row 1 drew its own positive: left out of its softmax
    got = candidate_softmax_loss(user, positives, negatives, items)
    want = []
    for n, (p, negs) in enumerate(zip(positives.tolist(), negatives.tolist(), strict=True)):
        ids = [p] + [j for j in negs if j != p]
        logits = items[ids] @ user[n]
        want.append(-torch.log_softmax(logits, dim=0)[0])
    assert torch.allclose(got, torch.stack(want).mean(), atol=1e-6)

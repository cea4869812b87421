"""LSC4Rec 3.2.2 cooperative training: negatives come from the cloud's candidate lists, never the user's items."""

from __future__ import annotations

import numpy as np
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

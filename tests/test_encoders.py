"""Device encoders (SASRec, SURGE, Caser), their losses, training and checkpoints (tools/encoders, tools/training)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ground.errors import TandemError
from tools.encoders import ENCODERS, build_encoder, pad_left
from tools.metrics import PopularityScorer, evaluate
from tools.training import (
    BPRLoss,
    CheckpointError,
    SoftmaxCE,
    TrainConfig,
    load_encoder,
    make_objective,
    save_checkpoint,
    train_encoder,
    training_batches,
)

NAMES = sorted(ENCODERS)


def _small(name: str, num_items: int = 40, dim: int = 16, table: np.ndarray | None = None):
    torch.manual_seed(0)
    return build_encoder(name, num_items, item_table=table, dim=dim, max_len=12).eval()


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_scores(name: str) -> None:
    model = _small(name)
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 7]])  # [B=3, L=6], left-padded
    user = model(seqs)
    assert user.shape == (3, 16)
    scores = model.full_scores(user)
    assert scores.shape == (3, 41) and torch.isinf(scores[:, 0]).all()
    torch.testing.assert_close(scores[:, 1:], user @ model.item_emb.weight[1:].T)
    assert model.candidate_scores(user, torch.tensor([1, 5, 9])).shape == (3, 3)
    assert model.candidate_scores(user, torch.tensor([[1, 2], [3, 4], [5, 6]])).shape == (3, 2)
    expected_t = 6 if model.per_position else 1
    assert model.training_outputs(seqs).shape == (3, expected_t, 16)


@pytest.mark.parametrize("name", NAMES)
def test_left_padding_and_numpy_encoding_do_not_change_the_user(name: str) -> None:
    model = _small(name)
    seqs = torch.tensor([[0, 3, 4, 5, 6], [2, 9, 3, 4, 5]])
    wider = torch.cat([torch.zeros(2, 4, dtype=torch.long), seqs], dim=1)  # more left padding
    torch.testing.assert_close(model(seqs), model(wider), atol=1e-5, rtol=1e-4)
    histories = [np.array([3, 4, 5, 6]), np.array([2, 9, 3, 4, 5])]
    torch.testing.assert_close(model.encode(histories), model(seqs), atol=1e-5, rtol=1e-4)
    long_history = [np.arange(1, 31)]  # longer than max_len 12: only the newest 12 are read
    torch.testing.assert_close(model.encode(long_history), model.encode([np.arange(19, 31)]))


def test_pad_left() -> None:
    assert pad_left([np.array([1, 2, 3]), np.array([4])], max_len=2).tolist() == [[2, 3], [0, 4]]


@pytest.mark.parametrize("name", NAMES)
def test_item_table_is_initialised_from_the_semantic_table(name: str) -> None:
    table = np.random.default_rng(0).normal(size=(41, 16)).astype(np.float32)
    table[0] = 0.0
    model = _small(name, table=table)
    torch.testing.assert_close(model.item_emb.weight.detach(), torch.from_numpy(table))
    assert model.item_emb.padding_idx == 0


def test_bpr_loss_is_eq10_and_ce_is_full_softmax() -> None:
    items = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 2 real items: the only negative of 1 is 2
    user = torch.tensor([[2.0, 0.5]])
    bpr = BPRLoss(negatives=3)(user, torch.tensor([1]), items)
    assert bpr.item() == pytest.approx(3 * -F.logsigmoid(torch.tensor(2.0 - 0.5)).item(), rel=1e-5)
    ce = SoftmaxCE()(user, torch.tensor([2]), items)
    assert ce.item() == pytest.approx(F.cross_entropy(torch.tensor([[2.0, 0.5]]), torch.tensor([1])).item())
    assert isinstance(make_objective("bpr", 4), BPRLoss) and isinstance(make_objective("ce"), SoftmaxCE)
    with pytest.raises(TandemError):
        make_objective("hinge")  # type: ignore[arg-type]


def test_training_batches_shift_targets_by_one() -> None:
    model = _small("sasrec")
    rng = np.random.default_rng(0)
    ((inputs, targets),) = training_batches(model, {0: np.array([1, 2, 3, 4])}, TrainConfig(), rng)
    assert inputs.tolist() == [[1, 2, 3]] and targets.tolist() == [[2, 3, 4]]
    surge = _small("surge")
    batches = list(training_batches(surge, {0: np.array([1, 2, 3, 4])}, TrainConfig(samples_per_user=3), rng))
    for inputs, targets in batches:
        for row, target in zip(inputs.tolist(), targets[:, 0].tolist(), strict=True):
            real = [i for i in row if i]
            assert real == list(range(1, target))  # the history is everything before the target


# Few epochs on ML-100K: short sequences and a high learning rate keep each model to a few seconds.
QUICK = {
    "sasrec": {"lr": 5e-3, "epochs": 3},
    "surge": {"lr": 5e-3, "epochs": 3},
    "caser": {"lr": 2e-3, "epochs": 4},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss_and_beats_popularity(name, ml100k, ml100k_splits, ml100k_semantics, tmp_path):
    config = TrainConfig(
        encoder=name, loss="ce", batch_size=64, patience=10, threads=2, seed=7, model={"max_len": 50}, **QUICK[name]
    )
    result = train_encoder(ml100k, ml100k_splits, config, item_table=ml100k_semantics.table,
                           checkpoint=tmp_path / f"{name}.pt", progress=False)  # fmt: skip
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    popularity = evaluate(PopularityScorer(ml100k_splits.train, ml100k.catalog.num_items), ml100k_splits.test)
    test = evaluate(result.model, ml100k_splits.test)
    assert test.metrics["NDCG@10"] > popularity.metrics["NDCG@10"]
    assert test.metrics["HR@10"] > popularity.metrics["HR@10"]
    assert (tmp_path / f"{name}.pt").is_file()


@pytest.mark.slow
def test_bpr_training_runs_and_resumes(ml100k, ml100k_splits, ml100k_semantics, tmp_path: Path) -> None:
    config = TrainConfig(encoder="sasrec", loss="bpr", epochs=2, batch_size=64, lr=5e-3, max_steps_per_epoch=5,
                         max_valid=100, model={"max_len": 20})  # fmt: skip
    path = tmp_path / "bpr.pt"
    result = train_encoder(ml100k, ml100k_splits, config, item_table=ml100k_semantics.table, checkpoint=path,
                           progress=False)  # fmt: skip
    assert result.epochs_run == 2 and np.isfinite([row["loss"] for row in result.history]).all()
    again = train_encoder(ml100k, ml100k_splits, dataclasses.replace(config, epochs=1), checkpoint=path,
                          progress=False, init_from=path)  # fmt: skip
    assert again.model.config() == result.model.config()
    assert again.best_valid["NDCG@10"] >= result.best_valid["NDCG@10"]  # the checkpoint is the epoch to beat
    with pytest.raises(CheckpointError, match="not caser"):
        train_encoder(ml100k, ml100k_splits, dataclasses.replace(config, encoder="caser"), init_from=path,
                      progress=False)  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_and_refusal_of_other_data(name: str, ml100k, tmp_path: Path) -> None:
    model = build_encoder(name, ml100k.catalog.num_items, dim=16, max_len=20).eval()
    path = save_checkpoint(tmp_path / "model.pt", model, ml100k, TrainConfig(encoder=name))
    loaded = load_encoder(path, ml100k)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    histories = [np.array([5, 9, 33, 2]), np.array([7])]
    torch.testing.assert_close(loaded.encode(histories), model.encode(histories))

    other = dataclasses.replace(ml100k, name="ml-1m")  # same shape, another fingerprint
    with pytest.raises(CheckpointError, match="trained on ml-100k"):
        load_encoder(path, other)


def test_sasrec_feed_forward_width_is_a_setting_that_checkpoints_keep(ml100k, tmp_path: Path) -> None:
    """`ffn`: the inner width of each block's feed-forward layer; left out of the config when it is the width, so
    checkpoints written before the setting existed load unchanged."""
    plain = build_encoder("sasrec", ml100k.catalog.num_items, dim=16, max_len=20)
    assert "ffn" not in plain.config() and plain.blocks[0].ffn[0].out_features == 16
    wide = build_encoder("sasrec", ml100k.catalog.num_items, dim=16, max_len=20, ffn=64).eval()
    assert wide.config()["ffn"] == 64 and wide.blocks[0].ffn[0].weight.shape == (64, 16)
    loaded = load_encoder(save_checkpoint(tmp_path / "wide.pt", wide, ml100k, TrainConfig()), ml100k)
    assert loaded.config() == wide.config()
    histories = [np.array([5, 9, 33, 2])]
    torch.testing.assert_close(loaded.encode(histories), wide.encode(histories))


def test_missing_or_foreign_checkpoint_is_a_clear_error(ml100k, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no encoder checkpoint"):
        load_encoder(tmp_path / "absent.pt", ml100k)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(TandemError):
        load_encoder(junk, ml100k)

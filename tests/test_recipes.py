"""Issue 14's training machinery: history-masked softmax, the learning-rate schedule, recipes, devices and
threads, snapshots and the validation curve saved in the checkpoint (tools/training, tools/recipes,
tools/compute, tools/curves)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ground.errors import TandemError
from tools.compute import configure_torch, machine_threads, resolve_device
from tools.curves import plot_training_curves
from tools.encoders import build_encoder
from tools.encoders.base import history_mask
from tools.recipes import RECIPES, recipe_config
from tools.training import SoftmaxCE, TrainConfig, _budget_clock, learning_rate, make_objective, train_encoder


def test_history_mask_marks_what_each_position_has_read_but_never_its_target() -> None:
    inputs = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 2, 4]])  # [B=2, L=5], left-padded
    targets = torch.tensor([[0, 3, 4, 5, 6], [2, 3, 2, 4, 1]])  # next item of each position
    keep = targets > 0
    mask = history_mask(inputs, targets, keep, num_items=6)
    assert mask.shape == (int(keep.sum()), 7)
    read = [set(), {3}, {3, 4}, {3, 4, 5}, {1}, {1, 2}, {1, 3}, {1, 2, 3}, {2, 3, 4}]  # minus each target
    for row, items in zip(mask[:, 1:], read, strict=True):
        assert {i + 1 for i in row.nonzero().flatten().tolist()} == items
    last = history_mask(inputs, targets[:, -1:], keep[:, -1:], num_items=6)  # T = 1: the whole input was read
    assert last[0, 1:].nonzero().flatten().add(1).tolist() == [3, 4, 5]
    assert last[1, 1:].nonzero().flatten().add(1).tolist() == [2, 3, 4]  # 1 is the target


def test_masked_softmax_is_the_cross_entropy_over_unread_items_only() -> None:
    torch.manual_seed(0)
    items = torch.randn(6, 4)  # [V + 1 = 6, d]
    user = torch.randn(2, 4)
    positives = torch.tensor([2, 5])
    exclude = torch.zeros(2, 6, dtype=torch.bool)
    exclude[0, [1, 3]] = True
    exclude[1, [4]] = True
    loss = SoftmaxCE(excludes_history=True)(user, positives, items, exclude=exclude)
    logits = user @ items[1:].T
    expected = torch.stack([
        F.cross_entropy(logits[0, [1, 3, 4]].unsqueeze(0), torch.tensor([0])),  # items 2, 4, 5 (target 2)
        F.cross_entropy(logits[1, [0, 1, 2, 4]].unsqueeze(0), torch.tensor([3])),  # items 1, 2, 3, 5 (target 5)
    ]).mean()  # fmt: skip
    torch.testing.assert_close(loss, expected)
    plain = SoftmaxCE()(user, positives, items)
    assert loss < plain  # fewer competitors
    assert make_objective("ce", mask_history=True).excludes_history
    assert not make_objective("ce").excludes_history


def test_calculate_loss_passes_the_history_mask_only_to_objectives_that_ask() -> None:
    model = build_encoder("sasrec", 30, dim=8, max_len=10, layers=1, heads=1, dropout=0.0)
    inputs = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    targets = torch.tensor([[0, 2, 3, 9], [5, 6, 7, 8]])
    seen: dict[str, object] = {}

    class Probe:
        excludes_history = True

        def __call__(self, user, positives, items, exclude=None):
            seen["exclude"] = exclude
            return user.sum() * 0

    model.calculate_loss(inputs, targets, Probe())
    assert seen["exclude"] is not None and seen["exclude"].shape == (7, 31)
    Probe.excludes_history = False
    model.calculate_loss(inputs, targets, Probe())
    assert seen["exclude"] is None


def test_learning_rate_warms_up_then_decays_to_zero_on_a_cosine() -> None:
    config = TrainConfig(lr=1e-3, schedule="cosine", warmup_steps=10)
    assert learning_rate(config, 0, 0.0) == pytest.approx(1e-4)
    assert learning_rate(config, 9, 0.0) == pytest.approx(1e-3)
    assert learning_rate(config, 100, 0.5) == pytest.approx(5e-4)
    assert learning_rate(config, 100, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(config, 100, 1.7) == pytest.approx(0.0, abs=1e-12)  # past the budget: stays at zero
    assert learning_rate(TrainConfig(lr=2e-3), 5, 0.9) == 2e-3  # constant


def test_recipes_are_complete_configs_and_overrides_apply() -> None:
    for name in RECIPES:
        config = recipe_config(name)
        assert config.recipe == name
    config = recipe_config("sasrec-full-ce", seed=3, time_budget_s=60.0, threads=None)
    assert config.seed == 3 and config.time_budget_s == 60.0
    assert config.threads is None and config.mask_history and config.loss == "ce"
    assert config.model["max_len"] == 200 and config.model is not RECIPES["sasrec-full-ce"]["model"]
    with pytest.raises(TandemError, match="unknown recipe"):
        recipe_config("sasrec-fast")
    with pytest.raises(TandemError, match="unknown setting"):
        recipe_config("sasrec-full-ce", learning_rate=1.0)


def test_device_and_threads_come_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert machine_threads() == len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        assert configure_torch("cpu", 1) == torch.device("cpu") and torch.get_num_threads() == 1
        configure_torch("cpu")
        assert torch.get_num_threads() == machine_threads()
    finally:
        torch.set_num_threads(before)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(TandemError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(TandemError, match="unknown device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_budget_clocks() -> None:
    wall = _budget_clock("wall", 2)
    cpu = _budget_clock("cpu", 2)
    start_wall, start_cpu = wall(), cpu()
    sum(i * i for i in range(300_000))  # some CPU work in this thread
    assert wall() > start_wall and cpu() > start_cpu
    with pytest.raises(TandemError, match="budget clock"):
        _budget_clock("sundial", 2)  # type: ignore[arg-type]


@pytest.mark.slow
def test_recipe_training_records_curve_snapshots_and_recipe(ml100k, ml100k_splits, ml100k_semantics,
                                                            tmp_path: Path) -> None:  # fmt: skip
    config = recipe_config("sasrec-full-ce", epochs=3, max_valid=200, max_steps_per_epoch=6, snapshot_s=(0.0, 1e6),
                           threads=2, model={"max_len": 30, "layers": 1})  # fmt: skip
    assert config.time_budget_s == RECIPES["sasrec-full-ce"]["time_budget_s"]  # None = keep the recipe's
    config = dataclasses.replace(config, time_budget_s=None, warmup_steps=2)  # the schedule runs over the epochs
    path = tmp_path / "sasrec-ce.pt"
    result = train_encoder(ml100k, ml100k_splits, config, item_table=ml100k_semantics.table, checkpoint=path,
                           progress=False)  # fmt: skip
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert all(row["elapsed"] > 0 for row in result.history)
    assert result.history[-1]["lr"] < config.lr / 2  # decayed by the end of the run
    assert set(result.snapshots) == {0.0, 1e6}
    assert result.snapshots[1e6]["epoch"] == result.best_epoch  # the run ended before 1e6 s: its final choice
    assert result.snapshots[0.0]["epoch"] == 1  # at 0 s only the first epoch was known
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert payload["train_config"]["recipe"] == "sasrec-full-ce"
    assert [row["epoch"] for row in payload["history"]] == [1, 2, 3]
    assert np.isfinite([row["loss"] for row in payload["history"]]).all()
    png = plot_training_curves({"run": result.history}, tmp_path / "curve.png", "test", {"HR@10": 0.1})
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--recipe", "sasrec-fast"), "unknown recipe 'sasrec-fast'"),
        (("--device", "tpu"), "unknown --device 'tpu'"),
    ],
)
def test_train_command_rejects_bad_recipe_and_device_in_one_line(args, message) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "tandem", "train", "--data", "ml-100k", *args], cwd=root,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode in (1, 2), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr + done.stdout

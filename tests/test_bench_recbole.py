"""The RecBole side-by-side benchmark's own logic (evals/bench_recbole, evals/recbole_runner): which Tandem run
it compares with, the RecBole settings that copy that run's architecture, the scratch environment's reuse,
and the best-epoch rule of the runner. RecBole itself only runs in the benchmark (its scratch environment
is a separate install of PyTorch)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest

from evals import bench_recbole
from evals.recbole_runner import Rounds, _best_epoch
from ground.errors import TandemError
from tools.recipes import recipe_config


def _results(path: Path) -> Path:
    def run(ndcg: float, dim: int) -> dict:
        config = {"lr": 0.001, "model": {"max_len": 200, "layers": 2, "heads": 1, "dropout": 0.1, "dim": dim}}
        return {"valid_masked": {"NDCG@10": ndcg}, "config": config, "curve": [],
                "machine": "x86_64, 2 cores, 2 torch threads on cpu, torch 2.13.0"}  # fmt: skip

    path.write_text(json.dumps({"runs": {"small": run(0.15, 64), "wide": run(0.17, 128), "late": run(0.16, 64)}}))
    return path


def test_the_tandem_side_is_the_named_run_or_the_best_on_validation(tmp_path: Path) -> None:
    results = _results(tmp_path / "sasrec.json")
    assert bench_recbole.tandem_side(results, None)[0] == "wide"
    assert bench_recbole.tandem_side(results, "late")[0] == "late"
    with pytest.raises(TandemError, match="no run 'nope'.*small, wide, late"):
        bench_recbole.tandem_side(results, "nope")
    with pytest.raises(TandemError, match="bench_sasrec"):
        bench_recbole.tandem_side(tmp_path / "missing.json", None)
    assert bench_recbole.tandem_threads(bench_recbole.tandem_side(results, None)[1]) == 2


def test_recbole_gets_the_architecture_and_learning_rate_of_the_tandem_run() -> None:
    config = recipe_config("sasrec-full-ce", lr=0.0015, model={"max_len": 150, "layers": 3, "heads": 1,
                                                                "dropout": 0.1, "dim": 96})  # fmt: skip
    saved = dataclasses.asdict(config)  # what a results file holds
    overrides = bench_recbole.recbole_overrides(saved, batch_size=512, seed=7)
    assert overrides["MAX_ITEM_LIST_LENGTH"] == 150 and overrides["n_layers"] == 3 and overrides["n_heads"] == 1
    assert overrides["hidden_size"] == overrides["inner_size"] == 96  # the feed-forward width defaults to the width
    saved["model"]["ffn"] = 384
    assert bench_recbole.recbole_overrides(saved, batch_size=2048, seed=7)["inner_size"] == 384
    assert overrides["hidden_dropout_prob"] == overrides["attn_dropout_prob"] == 0.1
    assert overrides["learning_rate"] == 0.0015 and overrides["train_batch_size"] == 512
    assert overrides["loss_type"] == "CE" and overrides["train_neg_sample_args"] is None  # full softmax, as Tandem
    assert overrides["eval_step"] == 1 and overrides["stopping_step"] >= 10_000  # the budget stops it, not patience


def test_a_filled_scratch_environment_is_reused_and_a_stale_one_rebuilt(tmp_path: Path, monkeypatch) -> None:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    calls: list[list[str]] = []
    monkeypatch.setattr(bench_recbole.subprocess, "run", lambda cmd, check: calls.append(cmd))
    (tmp_path / "venv" / "tandem-pins.txt").write_text("recbole==1.2.1\nnumpy==1.0\n")  # other pins: rebuilt
    assert bench_recbole.ensure_recbole_env(tmp_path) == python
    assert calls[0][1:4] == ["-m", "venv", "--clear"]
    assert any("recbole==1.2.1" in cmd and "--no-deps" in cmd for cmd in calls)
    assert any("numpy==1.26.4" in cmd for cmd in calls)
    calls.clear()
    assert bench_recbole.ensure_recbole_env(tmp_path) == python  # the stamp now matches: nothing installed
    assert calls == []


def test_a_failed_install_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    def fail(cmd, check):
        if "pip" in cmd:
            raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(bench_recbole.subprocess, "run", fail)
    with pytest.raises(TandemError, match="could not install RecBole"):
        bench_recbole.ensure_recbole_env(tmp_path)
    assert not (tmp_path / "venv" / "tandem-pins.txt").exists()


def test_the_runner_keeps_the_best_validation_epoch_known_at_a_moment() -> None:
    curve = [{"epoch": 1, "NDCG@10": 0.10, "elapsed": 50.0}, {"epoch": 2, "NDCG@10": 0.14, "elapsed": 100.0},
             {"epoch": 3, "NDCG@10": 0.12, "elapsed": 150.0}, {"epoch": 4, "NDCG@10": 0.16, "elapsed": 200.0}]
    assert _best_epoch(curve, 120.0) == 2
    assert _best_epoch(curve, 199.0) == 2
    assert _best_epoch(curve, 500.0) == 4
    assert _best_epoch(curve, 10.0) == 0


def test_rounds_continue_one_pass_over_the_data_and_stop_at_the_deadline() -> None:
    class Loader(list):
        dataset = "the loader's"

    loader = Loader([[i] * 2 for i in range(5)])  # 5 batches of 2 samples
    rounds = Rounds(loader, deadline=time.perf_counter() + 60, every_s=0.0)  # a round = one batch here
    seen = [batch[0] for _ in range(7) for batch in rounds]
    assert seen == [0, 1, 2, 3, 4, 0, 1]  # the pass goes on across rounds, then starts again
    assert rounds.samples == 14 and rounds.batches == 1 and len(rounds) == 5
    assert rounds.dataset == "the loader's"  # RecBole's trainer reads the loader's attributes through it
    whole = Rounds(loader, deadline=time.perf_counter() + 60, every_s=60.0)
    assert [batch[0] for batch in whole] == [0, 1, 2, 3, 4]  # a pass's end ends the round
    late = Rounds(loader, deadline=time.perf_counter() - 1, every_s=60.0)
    assert list(late) == [] and late.samples == 0

"""`evals.bench_sasrec --compare`: two runs' checkpoints on the same test users, paired intervals over users."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evals import bench_sasrec
from tools.checkpoints import file_digest
from tools.encoders import build_encoder
from tools.training import TrainConfig, save_checkpoint


def _run(ml100k, tmp_path: Path, label: str, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_encoder("sasrec", ml100k.catalog.num_items, dim=16, max_len=20).eval()
    path = save_checkpoint(tmp_path / f"{label}.pt", model, ml100k, TrainConfig())
    return {"checkpoint": str(path), "checkpoint_digest": file_digest(path)}


def test_compare_pairs_the_runs_on_every_test_user_and_checks_their_checkpoints(ml100k, ml100k_splits, tmp_path):
    runs = {"a": _run(ml100k, tmp_path, "a", 0), "b": _run(ml100k, tmp_path, "b", 1)}
    runs["a-again"] = dict(runs["a"])
    out = tmp_path / "sasrec_ml-100k.json"
    out.write_text(json.dumps({"data": "ml-100k", "runs": runs}))

    same = bench_sasrec.compare(out, "a", "a-again")
    assert same["HR@10"]["difference"] == "+0.0000 [+0.0000, +0.0000]"
    other = bench_sasrec.compare(out, "a", "b")
    assert set(other["HR@10"]) == {"a", "b", "difference"} and str(len(ml100k_splits.test)) in other["protocol"]
    stored = json.loads(out.read_text())["comparisons"]
    assert set(stored) == {"a-again minus a", "b minus a"} and stored["b minus a"]["checkpoints"]["b"]

    Path(runs["b"]["checkpoint"]).write_bytes(b"not the run's checkpoint")
    with pytest.raises(SystemExit, match="no longer the one the run wrote"):
        bench_sasrec.compare(out, "a", "b")
    with pytest.raises(SystemExit, match="no run 'c'"):
        bench_sasrec.compare(out, "a", "c")


def test_install_puts_the_runs_checkpoint_where_eval_rec_loads_it(ml100k, settings, tmp_path, monkeypatch):
    from tools.checkpoints import default_checkpoint

    home = tmp_path / "home"
    home.mkdir()
    (home / "data").symlink_to(settings.data_dir)
    monkeypatch.setenv("TANDEM_HOME", str(home))
    run = _run(ml100k, tmp_path, "a", 0)
    run["curve"] = [{"epoch": 1, "elapsed": 30.0, "HR@10": 0.1, "NDCG@10": 0.05, "loss": 7.0}]
    out = tmp_path / "sasrec_ml-100k.json"
    out.write_text(json.dumps({"data": "ml-100k", "fingerprint": ml100k.fingerprint(), "runs": {"a": run}}))

    target = bench_sasrec.install(out, "a")
    assert target == default_checkpoint(home / "models", "sasrec", ml100k, "ce")
    assert file_digest(target) == run["checkpoint_digest"] and target.with_suffix(".curve.png").is_file()
    assert json.loads(out.read_text())["runs"]["a"]["installed"]["path"] == str(target)

    with pytest.raises(SystemExit, match="no run 'b'"):
        bench_sasrec.install(out, "b")
    out.write_text(json.dumps({"data": "ml-100k", "fingerprint": "0" * 16, "runs": {"a": run}}))
    with pytest.raises(SystemExit, match="another copy"):
        bench_sasrec.install(out, "a")
    Path(run["checkpoint"]).write_bytes(b"not the run's checkpoint")
    with pytest.raises(SystemExit, match="no longer the one the run wrote"):
        bench_sasrec.install(out, "a")
    assert file_digest(target) != file_digest(Path(run["checkpoint"]))  # the installed copy is untouched


@pytest.mark.slow
def test_a_run_trains_evaluates_every_cut_and_records_it(ml100k, settings, tmp_path, monkeypatch):
    """One real (tiny) run: trained on the split, its final checkpoint and each snapshot scored on the test users with
    every seen item masked, popularity beside it, the entry written with the checkpoint's digest."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "data").symlink_to(settings.data_dir)
    monkeypatch.setenv("TANDEM_HOME", str(home))
    out = tmp_path / "sasrec_ml-100k.json"
    overrides = {"epochs": 2, "time_budget_s": 120.0, "model": {"dim": 16, "layers": 1, "ffn": 32, "max_len": 20}}
    entry = bench_sasrec.run("ml-100k", "sasrec-full-ce@4", "tiny", overrides, (0.0,), True, out)
    assert entry["epochs"] == 2 and entry["checkpoint"] == str(home / "scratch" / "tiny.pt")
    assert entry["checkpoint_digest"] == file_digest(Path(entry["checkpoint"]))
    masked, unmasked = entry["test_masked"], entry["test_unmasked"]
    assert 0.0 <= masked["NDCG@10"] <= masked["HR@10"] <= 1.0 and set(unmasked) == set(masked)
    assert entry["snapshots"] and all(cut["test_masked"]["HR@10"] >= 0.0 for cut in entry["snapshots"].values())
    stored = json.loads(out.read_text())
    assert stored["runs"]["tiny"]["checkpoint_digest"] == entry["checkpoint_digest"]
    assert "masked" in stored["protocol"] and stored["popularity_masked"]["HR@10"] > 0.0

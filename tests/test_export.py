"""`tandem data export --format recbole`: the atomic files reproduce Tandem's exact split (tools/data/export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tools.data.export import export_recbole, read_recbole_split


def test_recbole_export_round_trips_the_split(ml100k, ml100k_splits, tmp_path: Path) -> None:
    report = export_recbole(ml100k, ml100k_splits, tmp_path, seed=42)
    assert report.folder == tmp_path / "tandem-ml-100k"
    train, valid, test = read_recbole_split(report.folder, report.name)
    assert set(test) == {inst.user for inst in ml100k_splits.test}
    assert not set(test) & ml100k_splits.heldout_users
    for inst in ml100k_splits.test:
        assert test[inst.user] == inst.target
        # RecBole's test history is everything before the target: training sequence + validation item
        full = np.append(train[inst.user], valid[inst.user])
        np.testing.assert_array_equal(full[-ml100k_splits.max_len :], inst.history)
    for inst in ml100k_splits.valid:
        assert valid[inst.user] == inst.target
        np.testing.assert_array_equal(train[inst.user], ml100k_splits.train[inst.user])
    assert report.interactions == sum(len(ml100k.sequences[u]) for u in test)
    items = (report.folder / f"{report.name}.item").read_text().splitlines()
    assert len(items) - 1 == ml100k.catalog.num_items  # every item is a candidate in both
    config = report.config.read_text()
    assert "split: {LS: valid_and_test}" in config and "mode: full" in config and "TIME_FIELD: timestamp" in config
    assert f"MAX_ITEM_LIST_LENGTH: {ml100k_splits.max_len}" in config
    manifest = json.loads((report.folder / "manifest.json").read_text())
    assert manifest["fingerprint"] == ml100k.fingerprint()
    assert manifest["skipped_heldout_users"] == len(ml100k_splits.heldout_users)


def test_export_command_writes_files_and_refuses_unknown_formats(tmp_path: Path, monkeypatch) -> None:
    from tandem.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["data", "export", "--data", "ml-100k", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tandem-ml-100k" / "tandem-ml-100k.inter").is_file()
    from tools.recipes import DEFAULT_RECIPE, RECIPES

    config = (tmp_path / "tandem-ml-100k" / "tandem-ml-100k.yaml").read_text()
    model = RECIPES[DEFAULT_RECIPE]["model"]
    assert f"recipe {DEFAULT_RECIPE} " in config and f"hidden_size: {model['dim']}\n" in config
    assert f"inner_size: {model.get('ffn', model['dim'])}\n" in config and "train_neg_sample_args: ~" in config
    bad = runner.invoke(app, ["data", "export", "--data", "ml-100k", "--format", "csv", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown format" in bad.output

"""LSC4Rec's re-request threshold is used only with the device encoders it was sampled with (Eq. 11-12 compare the
cloud's ranking with theirs): another checkpoint turns re-requests off with a note, and `tandem setup` samples anew."""

from __future__ import annotations

import json
import shutil

from rich.console import Console

from graph.runtime import TandemRuntime, semantic_key
from tandem.setup import setup
from tools.checkpoints import load_threshold, save_threshold, threshold_path


def test_a_threshold_is_read_back_only_for_the_encoders_it_was_sampled_with(tmp_path) -> None:
    path = tmp_path / "threshold.json"
    assert load_threshold(path, {"SASRec": "a"}) == (None, "not sampled yet")
    save_threshold(path, 0.3, 0.1, 64, {"SASRec": "a", "SURGE": "b"})
    assert load_threshold(path, {"SASRec": "a", "SURGE": "b"}) == (0.3, "")
    assert load_threshold(path, {"SASRec": "c", "SURGE": "b"})[0] is None
    path.write_text(json.dumps({"threshold": 0.3, "load": 0.1, "sample": 64}))  # written before the record existed
    stale = (None, "sampled with other device encoder checkpoints")
    assert load_threshold(path, {"SASRec": "a", "SURGE": "b"}) == stale
    path.write_text("{not json")
    assert load_threshold(path, {"SASRec": "a"}) == (None, "threshold.json is unreadable")


def test_a_retrained_encoder_turns_the_old_threshold_off_until_setup_samples_it_again(settings, ready, tmp_path,
                                                                                      monkeypatch) -> None:  # fmt: skip
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    for part in ("data", "chroma", "embeddings"):
        (home / part).symlink_to(settings.home / part)
    for entry in settings.models_dir.iterdir():  # the thresholds copied (this test rewrites them), the rest linked
        if entry.name.startswith("threshold-"):
            shutil.copy(entry, home / "models" / entry.name)
        else:
            (home / "models" / entry.name).symlink_to(entry)
    monkeypatch.setenv("TANDEM_HOME", str(home))
    mine = settings.model_copy(update={"home": home})
    rt = TandemRuntime.create(mine, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    assert rt.request_threshold is not None and not any("threshold" in note for note in rt.notes)
    path = threshold_path(mine.models_dir, semantic_key(mine, rt.workspace), 0.1)
    saved = json.loads(path.read_text())
    saved["encoders"]["SASRec"] = "0" * 12  # as if SASRec had been retrained since
    path.write_text(json.dumps(saved))

    stale = TandemRuntime.create(mine, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    assert stale.request_threshold is None
    assert any("sampled with other device encoder checkpoints" in note for note in stale.notes)
    report = setup(stale.workspace, Console(stderr=True))
    assert any(line.startswith("re-request threshold") for line in report.built)
    again = TandemRuntime.create(mine, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    assert again.request_threshold == rt.request_threshold  # the same encoders and sample: the same threshold

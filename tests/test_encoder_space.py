"""e_sem in the device encoder's item space (`tools.encoder_space`): the cloud's behaviour side answers abstracts
without a query through the trained tower, queries stay in the text space, cloud and device score in the same table,
and a device and cloud that hold different tables refuse rather than mix them."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agents.cloud.agent import CloudAgent, SemanticSide
from agents.cloud.semantic import TextSpace, semantic_user_embeddings
from agents.device.encoders import EncoderShelf
from graph.boundary import Boundary, CloudUnavailableError, InProcessTransport, cloud_handlers
from graph.run import recommend
from graph.runtime import TandemRuntime, behaviour_space
from ground.errors import UsageError
from ground.settings import Settings
from tools.checkpoints import file_digest
from tools.encoder_space import (
    SummaryTower,
    TowerError,
    TowerResult,
    read_tower,
    save_tower,
    tower_path,
    train_summary_tower,
)
from tools.exact_scores import exact_scores
from tools.fused_tower import item_table
from tools.metrics import metrics_from_ranks
from tools.protocol import Abstract
from tools.semantic_head import Fitted, HeadConfig, SummaryExamples, head_ranks
from tools.tag_index import ExactTagIndex
from tools.workspace import Workspace

USER = "196"
TEXTS = ["Often watches: Comedy, Animation. Recently: Children's.", "Often watches: Horror, Thriller."]


def _random_tower(text_dim: int, item_dim: int, seed: int = 0) -> SummaryTower:
    """A tower with random (not zero) output weights, so that its map is known and not trivial."""
    torch.manual_seed(seed)
    tower = SummaryTower(text_dim, item_dim, hidden=16)
    with torch.no_grad():
        tower.semantic[-1].weight.normal_()
    return tower.eval()


def _saved(path: Path, tower: SummaryTower, table: np.ndarray, semantics_key: str, digest: str = "e" * 64) -> Path:
    result = TowerResult(tower, HeadConfig(), Fitted({}, 0, {}, [], 0.0))
    return save_tower(path, result, table, semantics_key, digest, {})


def test_the_tower_learns_the_encoder_space() -> None:
    rng = np.random.default_rng(1)
    items, text_dim = 60, 24
    encoder_table = np.vstack([np.zeros(8), rng.normal(size=(items, 8))]).astype(np.float32)
    directions = rng.normal(size=(items, text_dim))

    def examples(count: int) -> SummaryExamples:
        targets = rng.integers(1, items + 1, size=count)
        raw = directions[targets - 1] + 0.2 * rng.normal(size=(count, text_dim))
        seen = [rng.choice(np.setdiff1d(np.arange(1, items + 1), [t]), 4, replace=False) for t in targets]
        return SummaryExamples(raw.astype(np.float32), targets.astype(np.int64), seen)

    train, valid = examples(1500), examples(200)
    config = HeadConfig(loss="ce", hidden=64, epochs=15, lr=5e-3, patience=15)
    result = train_summary_tower(train, valid, encoder_table, config, progress=False)
    assert result.fitted.initial_valid["NDCG@10"] < 0.2 < 0.6 < result.fitted.best_valid["NDCG@10"]
    assert metrics_from_ranks(head_ranks(result.tower, valid, encoder_table)) == result.fitted.best_valid


def test_a_saved_tower_reads_back_and_refuses_other_semantics(tmp_path: Path, ml100k_semantics) -> None:
    text = ml100k_semantics.table
    encoder_table = np.random.default_rng(2).normal(size=(len(text), 16)).astype(np.float32)
    tower = _random_tower(384, 16)
    path = _saved(tmp_path / "tower.pt", tower, encoder_table, ml100k_semantics.key)
    space, record = read_tower(path, ml100k_semantics.key, len(text) - 1, file_digest(path))
    raw = np.random.default_rng(3).normal(size=(3, 384)).astype(np.float32)
    np.testing.assert_array_equal(space.summaries(raw), tower.project(raw))
    np.testing.assert_array_equal(space.table, encoder_table)
    assert record["encoder_digest"] == "e" * 64 and space.stale_for("f" * 64) and not space.stale_for("e" * 64)
    with pytest.raises(TowerError, match="other|not"):
        read_tower(path, "another-key", len(text) - 1, "x")
    with pytest.raises(TowerError, match="catalogue"):
        read_tower(_saved(tmp_path / "short.pt", tower, encoder_table[:10], ml100k_semantics.key),
                   ml100k_semantics.key, len(text) - 1, "x")  # fmt: skip
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TowerError, match="cannot read"):
        read_tower(tmp_path / "bad.pt", ml100k_semantics.key, len(text) - 1, "x")


def test_the_cloud_answers_a_query_in_the_text_space_and_a_history_in_the_encoders(tmp_path: Path, ml100k,
                                                                                    ml100k_semantics) -> None:
    """With the real MiniLM: an abstract without a query goes through the tower into E_str; one with a query is
    answered in Eq. 1's space, as before; planning's text vectors (`project`) stay in Eq. 1's space."""
    text = ml100k_semantics.table
    encoder_table = np.random.default_rng(4).normal(size=(len(text), 16)).astype(np.float32)
    path = _saved(tmp_path / "tower.pt", _random_tower(384, 16), encoder_table, ml100k_semantics.key)
    encoder_space, _ = read_tower(path, ml100k_semantics.key, len(text) - 1, file_digest(path))
    plain, mapped = TextSpace(ml100k_semantics), TextSpace(ml100k_semantics, encoder_space=encoder_space)
    cloud = CloudAgent(space=plain, index=ExactTagIndex(ml100k.catalog, text),
                       behaviour=SemanticSide(mapped, ExactTagIndex(ml100k.catalog, encoder_table)))
    asked = Abstract(sanitized_query="a funny animated film", behavior_summary=TEXTS[0])
    told = Abstract(sanitized_query="", behavior_summary=TEXTS[1])
    e_sem = cloud.semantic_embeddings([asked, told], [0.3, 0.3])
    np.testing.assert_allclose(e_sem[0], semantic_user_embeddings([asked], [0.3], plain)[0], atol=1e-6)
    np.testing.assert_allclose(e_sem[1], encoder_space.summaries(mapped.encode_afresh([TEXTS[1]])[0])[0], atol=1e-5)
    np.testing.assert_allclose(mapped.project(TEXTS), plain.project(TEXTS), atol=1e-6)
    with pytest.raises(ValueError, match="no map for queries"):
        semantic_user_embeddings([asked], [0.3], mapped)
    plans = [cloud.plan(asked).plan, cloud.plan(told).plan]  # the rule planner (no language model)
    one, two = cloud.semantic_batch([asked, told], plans)
    assert one.space == "" and two.space == mapped.table_key
    np.testing.assert_allclose(two.scores, exact_scores(encoder_table, two.candidates, two.e_sem), rtol=1e-6)
    assert cloud.semantic(told, plans[1], behaviour=False).space == ""  # a device without the tower: the text space
    assert mapped.dim == 16 and plain.table is text and mapped.key != plain.key
    assert mapped.table_key != plain.table_key == ml100k_semantics.key


def _home_with_models_of(settings: Settings, home: Path) -> Settings:
    """A home that reads the ML-100K data, embeddings and models of `settings` (links) and writes its own."""
    home.mkdir()
    for name in ("data", "embeddings", "chroma", "semantic"):
        if (settings.home / name).exists():
            (home / name).symlink_to(settings.home / name)
    (home / "models").mkdir()
    for file in settings.models_dir.iterdir():
        (home / "models" / file.name).symlink_to(file)
    return settings.model_copy(update={"home": home})


@pytest.fixture
def tower_home(settings: Settings, ready: Workspace, tmp_path: Path) -> Settings:
    """ML-100K as after `make demo`, plus a tower over the real SASRec's item table (random map: the plumbing)."""
    own = _home_with_models_of(settings, tmp_path / "home")
    ws = Workspace(own, "ml-100k", progress=False)
    shelf = EncoderShelf(own.models_dir, ws.dataset)
    table = item_table(shelf.get("SASRec"))
    _saved(tower_path(own.models_dir, ws.semantics.key), _random_tower(384, table.shape[1]), table,
           ws.semantics.key, file_digest(shelf.path("SASRec")))  # fmt: skip
    return own


def test_the_setting_chooses_the_space_and_a_bad_tower_is_reported(tower_home: Settings, caplog) -> None:
    ws = Workspace(tower_home, "ml-100k", progress=False)
    assert behaviour_space(tower_home, ws) is not None  # auto, installed: the encoder space
    assert behaviour_space(tower_home.model_copy(update={"semantic_space": "text"}), ws) is None
    path = tower_path(tower_home.models_dir, ws.semantics.key)
    path.write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        assert behaviour_space(tower_home, ws) is None
    assert "cannot read semantic tower" in caplog.text
    path.unlink()
    with pytest.raises(UsageError, match="semantic_space is encoder.*tandem train --semantic --space encoder"):
        behaviour_space(tower_home.model_copy(update={"semantic_space": "encoder"}), ws)


def test_the_graph_ranks_in_both_spaces_end_to_end(tower_home: Settings, tmp_path: Path) -> None:
    """The real graph, rule planner: with a query the answer is Eq. 1's as before; without one the cloud retrieves
    from SASRec's item table by exact search, the device reads the compact answer against the same table, caches
    it with its space, answers the next request from the cache and calibrates it in that space when the cloud is
    down."""
    rt = TandemRuntime.create(tower_home, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    behaviour = rt.cloud.behaviour
    assert behaviour is not None and isinstance(behaviour.index, ExactTagIndex)
    assert rt.device.item_space == behaviour.space.table_key
    np.testing.assert_array_equal(rt.device.behaviour_table, behaviour.space.table)
    asked = recommend(rt, USER, "a funny animated movie", allow_rerequest=False)
    assert asked["source"] == "cloud" and len(asked["ranked"]) == 10 and rt.device.cached(USER).space == ""
    first = recommend(rt, USER, "", allow_rerequest=False)
    assert first["source"] == "cloud" and len(first["ranked"]) == 10
    cached = rt.device.cached(USER)
    e_sem = np.asarray(cached.e_sem, dtype=np.float32)
    assert cached.space == behaviour.space.table_key and e_sem.shape == (behaviour.space.dim,)
    np.testing.assert_allclose(cached.candidate_scores, exact_scores(behaviour.space.table,
                                                                     np.asarray(cached.candidates), e_sem),
                               rtol=1e-6)  # fmt: skip
    again = recommend(rt, USER, "", allow_rerequest=False)
    assert again["source"] == "cache" and again["ranked"] == first["ranked"]
    rt.device.store.append(USER, rt.device.catalog.tag_members("Horror")[:15].tolist())
    down = recommend(replace(rt, boundary=Boundary(DownTransport())), USER, "", allow_rerequest=False)
    assert down["source"] == "calibrated_cache" and len(down["ranked"]) == 10


class DownTransport:
    def send(self, route: str, payload: bytes) -> bytes:
        raise CloudUnavailableError("connection refused (test)")


def test_a_device_and_cloud_with_different_tables_refuse_rather_than_mix(tower_home: Settings,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    """A device with the tower and a cloud without it: an abstract with no query is refused (the device would
    read text-space scores against E_str), with a warning and the device's fallback; a query still crosses. A device
    without the tower and a cloud with it: every answer in the text space, as that device expects."""
    encoder_rt = TandemRuntime.create(tower_home, "ml-100k", planner="rule", store_path=str(tmp_path / "a.sqlite"))
    text_only = tower_home.model_copy(update={"semantic_space": "text"})
    text_rt = TandemRuntime.create(text_only, "ml-100k", planner="rule", store_path=str(tmp_path / "b.sqlite"))

    def crossed(device_rt, cloud_rt):
        return replace(device_rt, boundary=Boundary(InProcessTransport(cloud_handlers(cloud_rt.cloud))))

    refused = recommend(crossed(encoder_rt, text_rt), USER, "", allow_rerequest=False)
    assert refused["source"] == "device_only" and len(refused["ranked"]) == 10
    assert any("without a query in item space" in warning for warning in refused["warnings"])
    asked = recommend(crossed(encoder_rt, text_rt), USER, "a funny animated movie", allow_rerequest=False)
    assert asked["source"] == "cloud"
    older = recommend(crossed(text_rt, encoder_rt), USER, "", allow_rerequest=False)
    assert older["source"] == "cloud" and text_rt.device.cached(USER).space == ""


def test_a_tower_from_another_encoder_checkpoint_is_noted_as_stale(tower_home: Settings, tmp_path: Path) -> None:
    create = lambda name: TandemRuntime.create(tower_home, "ml-100k", planner="rule",  # noqa: E731
                                               store_path=str(tmp_path / name))  # fmt: skip
    assert not any("semantic tower" in note for note in create("a.sqlite").notes)
    ws = Workspace(tower_home, "ml-100k", progress=False)
    path = tower_path(tower_home.models_dir, ws.semantics.key)
    space, _ = read_tower(path, ws.semantics.key, ws.dataset.catalog.num_items, file_digest(path))
    _saved(path, space.tower, space.table, ws.semantics.key, digest="0" * 64)  # as if SASRec was retrained since
    notes = create("b.sqlite").notes
    assert any("another SASRec checkpoint (000000000000" in note and "--space encoder" in note for note in notes)


def test_tandem_train_installs_a_tower_over_the_devices_sasrec(settings: Settings, ready: Workspace, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`tandem train --semantic --space encoder` (on a few examples, for speed): the tower is saved where the
    cloud looks for it, with a copy of the installed SASRec's item table and that checkpoint's digest."""
    import agents.pipeline
    from ground.settings import get_settings
    from tandem.cli import app

    own = _home_with_models_of(settings, tmp_path / "home")
    rng = np.random.default_rng(5)

    def few(device, space, ws, names, progress=True):
        targets = rng.integers(1, ws.dataset.catalog.num_items + 1, size=64)
        return {name: SummaryExamples(rng.normal(size=(64, 384)).astype(np.float32), targets.astype(np.int64),
                                      [np.array([1, 2, 3])] * 64) for name in names}  # fmt: skip

    monkeypatch.setattr(agents.pipeline, "head_examples", few)
    monkeypatch.setenv("TANDEM_HOME", str(own.home))
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(app, ["train", "--data", "ml-100k", "--semantic", "--space", "encoder",
                                        "--epochs", "2"])  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    ws = Workspace(own, "ml-100k", progress=False)
    shelf = EncoderShelf(own.models_dir, ws.dataset)
    path = tower_path(own.models_dir, ws.semantics.key)
    space, record = read_tower(path, ws.semantics.key, ws.dataset.catalog.num_items, file_digest(path))
    np.testing.assert_array_equal(space.table, item_table(shelf.get("SASRec")))
    assert space.encoder_digest == file_digest(shelf.path("SASRec")) and record["data"]["encoder"] == "SASRec"
    assert "semantic tower" in done.output and path.with_suffix(".curve.png").is_file()


def test_only_the_abstract_and_the_devices_table_key_cross(tower_home: Settings, tmp_path: Path) -> None:
    """With the tower, the request also names the table the device holds: the same key for every user (item
    semantics and SASRec checkpoint), nothing of the user's."""
    from tests.test_privacy import SpyTransport

    rt = TandemRuntime.create(tower_home, "ml-100k", planner="rule", store_path=str(tmp_path / "d.sqlite"))
    spy = SpyTransport(cloud_handlers(rt.cloud))
    spied = replace(rt, boundary=Boundary(spy))
    for user in (USER, "1", "500"):
        recommend(spied, user, "", allow_rerequest=False)
    semantic = [message for route, message in spy.sent if route == "semantic"]
    assert len(semantic) == 3 and all(set(m) <= {"abstract", "plan", "wire", "space"} for route, m in spy.sent)
    assert {m["space"] for m in semantic} == {rt.device.item_space}
    assert rt.device.item_space.startswith(rt.workspace.semantics.key + "+encoder-")


def test_a_cache_in_the_encoder_space_is_judged_by_its_own_policy(tower_home: Settings, tmp_path: Path) -> None:
    """SCaLRec's verdict on a cached answer uses the threshold chosen for that answer's space."""
    from tools.calibration import ReliabilityPolicy

    rt = TandemRuntime.create(tower_home, "ml-100k", planner="rule", store_path=str(tmp_path / "d.sqlite"))
    recommend(rt, USER, "", allow_rerequest=False)
    rt.device.store.append(USER, rt.device.store.history(USER)[0][-2:].tolist())  # two newer interactions
    history = rt.device.store.history(USER)[0].tolist()
    lenient, strict = ReliabilityPolicy(min_reliability=0.0), ReliabilityPolicy(min_reliability=1.01)
    entry = rt.device.cached(USER)
    assert entry.space == rt.device.item_space
    key = entry.query_key  # the request's cache key (the query and the planner's scope)
    assert replace(rt.device, behaviour_policy=lenient, policy=strict).cache_verdict(USER, key, history).reliable
    assert not replace(rt.device, behaviour_policy=strict, policy=lenient).cache_verdict(USER, key, history).reliable

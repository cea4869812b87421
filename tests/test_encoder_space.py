"""e_sem in the device encoder's item space (`tools.encoder_space`): queries carried over through their nearest items,
summaries through the trained tower, one table for cloud and device, and a refusal when the two disagree."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.cloud.semantic import TextSpace, semantic_user_embeddings
from agents.device.encoders import EncoderShelf
from graph.boundary import Boundary, InProcessTransport, cloud_handlers
from graph.run import recommend
from graph.runtime import TandemRuntime, text_space
from ground.errors import UsageError
from ground.settings import Settings
from tools.checkpoints import file_digest
from tools.encoder_space import (
    SummaryTower,
    TowerError,
    TowerResult,
    calibrate_scale,
    carry_queries,
    read_tower,
    save_tower,
    tower_path,
    train_summary_tower,
)
from tools.exact_scores import exact_scores
from tools.fused_tower import item_table
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


def test_a_query_is_carried_over_through_its_nearest_items() -> None:
    rng = np.random.default_rng(0)
    text_table, encoder_table = rng.normal(size=(41, 8)), rng.normal(size=(41, 5))
    text_table[0] = encoder_table[0] = 0.0
    one = carry_queries(text_table[[7, 30]], text_table, encoder_table, k=1)
    nearest = [int(np.argmax(text_table[1:] @ v)) + 1 for v in text_table[[7, 30]]]
    np.testing.assert_allclose(one, encoder_table[nearest], rtol=1e-6)
    many = carry_queries(text_table[[7]], text_table, encoder_table, k=5)[0]
    top = np.argsort(-(text_table[1:] @ text_table[7]))[:5] + 1
    np.testing.assert_allclose(many, encoder_table[top].mean(axis=0), rtol=1e-5)
    text_table[0] = 100.0  # the padding row never counts, however near it is
    assert not np.allclose(carry_queries(text_table[[7]], text_table, encoder_table, k=1), encoder_table[0])


def test_the_tower_learns_the_encoder_space_and_its_scale_keeps_the_ranks() -> None:
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
    before = head_ranks(result.tower, valid, encoder_table)
    text_table = np.vstack([np.zeros(4), rng.normal(size=(items, 4))]).astype(np.float32)
    text_vectors = rng.normal(size=(len(train), 4)).astype(np.float32)
    scale = calibrate_scale(result.tower, train.raw, text_vectors, text_table, encoder_table)
    mapped = result.tower.project(train.raw)
    target = np.linalg.norm(carry_queries(text_vectors, text_table, encoder_table), axis=1).mean()
    assert scale != 1.0 and np.linalg.norm(mapped, axis=1).mean() == pytest.approx(target, rel=1e-4)
    np.testing.assert_array_equal(head_ranks(lambda x: result.tower(x) * result.tower.scale, valid, encoder_table),
                                  before)  # fmt: skip


def test_a_saved_tower_reads_back_and_refuses_other_semantics(tmp_path: Path, ml100k_semantics) -> None:
    text = ml100k_semantics.table
    encoder_table = np.random.default_rng(2).normal(size=(len(text), 16)).astype(np.float32)
    tower = _random_tower(384, 16)
    path = _saved(tmp_path / "tower.pt", tower, encoder_table, ml100k_semantics.key)
    space, record = read_tower(path, ml100k_semantics.key, text, file_digest(path))
    raw = np.random.default_rng(3).normal(size=(3, 384)).astype(np.float32)
    np.testing.assert_array_equal(space.summaries(raw), tower.project(raw))
    np.testing.assert_array_equal(space.table, encoder_table)
    assert record["encoder_digest"] == "e" * 64 and space.stale_for("f" * 64) and not space.stale_for("e" * 64)
    with pytest.raises(TowerError, match="other|not"):
        read_tower(path, "another-key", text, "x")
    with pytest.raises(TowerError, match="catalogue"):
        read_tower(_saved(tmp_path / "short.pt", tower, encoder_table[:10], ml100k_semantics.key),
                   ml100k_semantics.key, text, "x")  # fmt: skip
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TowerError, match="cannot read"):
        read_tower(tmp_path / "bad.pt", ml100k_semantics.key, text, "x")


def test_e_sem_mixes_a_carried_query_with_the_mapped_summary(tmp_path: Path, ml100k_semantics) -> None:
    """With the real MiniLM: summaries through the tower, queries through their nearest items; planning's text
    vectors (`project`) stay in Eq. 1's space."""
    text = ml100k_semantics.table
    encoder_table = np.random.default_rng(4).normal(size=(len(text), 16)).astype(np.float32)
    path = _saved(tmp_path / "tower.pt", _random_tower(384, 16), encoder_table, ml100k_semantics.key)
    encoder_space, _ = read_tower(path, ml100k_semantics.key, text, file_digest(path))
    plain, mapped = TextSpace(ml100k_semantics), TextSpace(ml100k_semantics, encoder_space=encoder_space)
    abstracts = [Abstract(sanitized_query="a funny animated film", behavior_summary=TEXTS[0]),
                 Abstract(sanitized_query="", behavior_summary=TEXTS[1])]  # fmt: skip
    e_sem = semantic_user_embeddings(abstracts, [0.3, 0.3], mapped)
    query = carry_queries(plain.project(["a funny animated film"]), text, encoder_table)[0]
    summaries = encoder_space.summaries(mapped.encode_afresh(TEXTS)[0])
    np.testing.assert_allclose(e_sem[0], 0.3 * query + 0.7 * summaries[0], atol=1e-5)
    np.testing.assert_allclose(e_sem[1], summaries[1], atol=1e-5)  # no query: the summary alone
    np.testing.assert_allclose(mapped.project(TEXTS), plain.project(TEXTS), atol=1e-6)
    assert mapped.dim == 16 and plain.table is text
    np.testing.assert_array_equal(mapped.table, encoder_table)
    assert mapped.key != plain.key and mapped.table_key != plain.table_key == ml100k_semantics.key


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
    assert text_space(tower_home, ws).encoder_space is not None  # auto, installed: the encoder space
    assert text_space(tower_home.model_copy(update={"semantic_space": "text"}), ws).encoder_space is None
    path = tower_path(tower_home.models_dir, ws.semantics.key)
    path.write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        assert text_space(tower_home, ws).encoder_space is None
    assert "cannot read semantic tower" in caplog.text
    path.unlink()
    with pytest.raises(UsageError, match="semantic_space is encoder.*tandem train --semantic --space encoder"):
        text_space(tower_home.model_copy(update={"semantic_space": "encoder"}), ws)


def test_the_graph_ranks_in_the_encoder_space_end_to_end(tower_home: Settings, tmp_path: Path) -> None:
    """The real graph, rule planner: the cloud retrieves from SASRec's item table by exact search, the device reads
    the compact answer against the same table, caches it and answers the next request from the cache."""
    rt = TandemRuntime.create(tower_home, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    space = rt.cloud.space
    assert space.encoder_space is not None and isinstance(rt.cloud.index, ExactTagIndex)
    np.testing.assert_array_equal(rt.device.item_table, space.table)
    first = recommend(rt, USER, "a funny animated movie", allow_rerequest=False)
    assert first["source"] == "cloud" and len(first["ranked"]) == 10
    cached = rt.device.cached(USER)
    e_sem = np.asarray(cached.e_sem, dtype=np.float32)
    assert e_sem.shape == (space.dim,) and rt.device.item_space == space.table_key
    np.testing.assert_allclose(cached.candidate_scores, exact_scores(space.table, np.asarray(cached.candidates),
                                                                     e_sem), rtol=1e-6)  # fmt: skip
    again = recommend(rt, USER, "a funny animated movie", allow_rerequest=False)
    assert again["source"] == "cache" and again["ranked"] == first["ranked"]


def test_a_device_in_another_space_is_refused_with_a_warning(tower_home: Settings, settings: Settings,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """A text-space device talking to an encoder-space cloud (and the other way round) gets a refusal, not
    scores from the wrong table: the request takes the device's fallback and says why."""
    encoder_rt = TandemRuntime.create(tower_home, "ml-100k", planner="rule", store_path=str(tmp_path / "a.sqlite"))
    text_only = tower_home.model_copy(update={"semantic_space": "text"})
    text_rt = TandemRuntime.create(text_only, "ml-100k", planner="rule", store_path=str(tmp_path / "b.sqlite"))
    for device_rt, cloud_rt in ((text_rt, encoder_rt), (encoder_rt, text_rt)):
        crossed = replace(device_rt, boundary=Boundary(InProcessTransport(cloud_handlers(cloud_rt.cloud))))
        state = recommend(crossed, USER, "", allow_rerequest=False)
        assert state["source"] == "device_only" and len(state["ranked"]) == 10
        assert any("scores e_sem in item space" in warning for warning in state["warnings"])


def test_a_tower_from_another_encoder_checkpoint_is_noted_as_stale(tower_home: Settings, tmp_path: Path) -> None:
    create = lambda name: TandemRuntime.create(tower_home, "ml-100k", planner="rule",  # noqa: E731
                                               store_path=str(tmp_path / name))  # fmt: skip
    assert not any("semantic tower" in note for note in create("a.sqlite").notes)
    ws = Workspace(tower_home, "ml-100k", progress=False)
    path = tower_path(tower_home.models_dir, ws.semantics.key)
    space, _ = read_tower(path, ws.semantics.key, ws.semantics.table, file_digest(path))
    _saved(path, space.tower, space.table, ws.semantics.key, digest="0" * 64)  # as if SASRec was retrained since
    notes = create("b.sqlite").notes
    assert any("another SASRec checkpoint (000000000000" in note and "--space encoder" in note for note in notes)

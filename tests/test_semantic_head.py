"""The learned semantic tower (CDA4Rec Eq. 2 trained with Eq. 10): `tools.semantic_head`, the cloud's text space
with a head, the runtime's choice, and what the head is trained on."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.cloud.semantic import TextSpace, semantic_user_embeddings
from agents.device.encoders import EncoderShelf
from agents.pipeline import summary_examples
from graph.runtime import build_device, semantic_key, text_space
from ground.settings import Settings
from tools.device_store import DeviceStore
from tools.embeddings import embed_texts
from tools.protocol import Abstract
from tools.semantic_head import (
    HeadConfig,
    HeadError,
    SummaryCase,
    SummaryExamples,
    SummaryHead,
    head_path,
    head_ranks,
    read_head,
    save_head,
    train_head,
    training_cases,
)
from tools.workspace import Workspace

TEXTS = ["Facts: 12 interactions over 40 days; top tags: Comedy, Drama.", "a sparse history that leans to horror",
         "Facts: 300 interactions over 900 days; top tags: Action, Thriller, Sci-Fi."]  # fmt: skip


def test_an_untrained_head_is_the_pca_of_eq1(ml100k_semantics) -> None:
    raw = embed_texts(TEXTS)
    for hidden in (0, 32):
        head = SummaryHead.from_pca(ml100k_semantics.pca, hidden)
        np.testing.assert_allclose(head.project(raw), ml100k_semantics.pca.transform(raw), atol=1e-5)


def _separable(table: np.ndarray, per_item: int, seed: int) -> tuple[SummaryExamples, np.ndarray]:
    """Examples whose text vector names its target: item k's examples sit around a random direction r_k."""
    rng = np.random.default_rng(seed)
    items = np.arange(1, 41)
    directions = rng.normal(size=(len(items), 384)).astype(np.float32)
    raw, targets = [], []
    for item, direction in zip(items, directions, strict=True):
        noisy = direction + 0.3 * rng.normal(size=(per_item, 384)).astype(np.float32)
        raw.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
        targets += [item] * per_item
    seen = [np.array([1 + (t % 7) + 50], dtype=np.int64) for t in targets]  # an unrelated seen item each
    return SummaryExamples(np.concatenate(raw), np.array(targets, dtype=np.int64), seen), items


@pytest.mark.parametrize("loss", ["ce", "bpr"])
def test_training_learns_where_summaries_should_land(ml100k_semantics, loss: str) -> None:
    table = ml100k_semantics.table
    train, _ = _separable(table, 12, seed=0)
    valid, _ = _separable(table, 3, seed=0)  # the same directions, other noise
    config = HeadConfig(loss=loss, hidden=64, epochs=40, batch_size=64, lr=3e-3, patience=40, seed=1)
    result = train_head(train, valid, table, ml100k_semantics.pca, config, progress=False)
    assert result.initial_valid["HR@10"] < 0.1  # the PCA knows nothing of these directions
    assert result.best_valid["HR@10"] > 0.6
    assert result.best_valid["NDCG@10"] == max(row["NDCG@10"] for row in result.history)
    ranks = head_ranks(result.head, valid, table)
    assert np.mean(ranks < 10) == pytest.approx(result.best_valid["HR@10"])
    # served at the PCA's scale, so Eq. 2's alpha keeps its meaning beside a query's PCA projection
    served = np.linalg.norm(result.head.project(train.raw), axis=1).mean()
    assert served == pytest.approx(np.linalg.norm(ml100k_semantics.pca.transform(train.raw), axis=1).mean(), rel=1e-4)


def test_heads_round_trip_and_refuse_other_semantics(tmp_path: Path, ml100k_semantics) -> None:
    table = ml100k_semantics.table
    train, _ = _separable(table, 4, seed=2)
    result = train_head(train, train, table, ml100k_semantics.pca, HeadConfig(hidden=16, epochs=2), progress=False)
    path = save_head(tmp_path / "head.pt", result, ml100k_semantics.key, {"dataset": "ml-100k"})
    head, record = read_head(path, ml100k_semantics.key)
    raw = embed_texts(TEXTS)
    np.testing.assert_allclose(head.project(raw), result.head.project(raw), atol=1e-6)
    assert record["config"]["hidden"] == 16 and record["data"] == {"dataset": "ml-100k"}
    with pytest.raises(HeadError, match="trained for item semantics"):
        read_head(path, "ml-1m-other-key")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HeadError, match="cannot read"):
        read_head(tmp_path / "bad.pt", ml100k_semantics.key)
    with pytest.raises(HeadError, match="tandem train --semantic"):
        read_head(tmp_path / "missing.pt", ml100k_semantics.key)


def _scaled_head(semantics, factor: float) -> SummaryHead:
    """A head whose output is the PCA times `factor` (so its effect is known exactly)."""
    head = SummaryHead.from_pca(semantics.pca, hidden=0)
    with torch.no_grad():
        head.linear.weight.mul_(factor)
        head.linear.bias.mul_(factor)
    return head


def test_the_head_maps_summaries_only(ml100k_semantics) -> None:
    plain = TextSpace(ml100k_semantics)
    headed = TextSpace(ml100k_semantics, head=_scaled_head(ml100k_semantics, -2.0), head_digest="ab" * 32)
    abstracts = [Abstract(sanitized_query="a funny animated film", behavior_summary=TEXTS[0]),
                 Abstract(sanitized_query="", behavior_summary=TEXTS[1])]  # fmt: skip
    base = semantic_user_embeddings(abstracts, [0.3, 0.3], plain)
    mapped = semantic_user_embeddings(abstracts, [0.3, 0.3], headed)
    query, summaries = plain.project(["a funny animated film"])[0], plain.project(TEXTS[:2])
    np.testing.assert_allclose(base[0], 0.3 * query + 0.7 * summaries[0], atol=1e-5)
    np.testing.assert_allclose(mapped[0], 0.3 * query + 0.7 * (-2.0 * summaries[0]), atol=1e-5)
    np.testing.assert_allclose(mapped[1], -2.0 * summaries[1], atol=1e-5)  # no query: the summary alone
    np.testing.assert_allclose(headed.project(TEXTS), plain.project(TEXTS), atol=1e-6)  # queries, tags, kNN
    assert plain.key == ml100k_semantics.key and headed.key == f"{ml100k_semantics.key}+head-{'ab' * 6}"


def test_the_runtime_uses_a_head_when_one_exists(tmp_path: Path, settings: Settings, caplog) -> None:
    ws = Workspace(settings, "ml-100k", progress=False)
    own = Settings(home=tmp_path)
    assert text_space(own, ws).head is None  # none trained: the PCA
    train, _ = _separable(ws.semantics.table, 3, seed=3)
    result = train_head(train, train, ws.semantics.table, ws.semantics.pca, HeadConfig(hidden=8, epochs=1),
                        progress=False)  # fmt: skip
    path = save_head(head_path(own.models_dir, ws.semantics.key), result, ws.semantics.key, {})
    space = text_space(own, ws)
    assert space.head is not None and space.key.startswith(f"{ws.semantics.key}+head-")
    assert semantic_key(own, ws) == space.key  # the calibrator and threshold fitted to this e_sem are its own
    assert text_space(Settings(home=tmp_path, semantic_head=False), ws).head is None
    path.write_bytes(b"corrupt")
    with caplog.at_level(logging.WARNING):
        assert text_space(own, ws).head is None
    assert "cannot read semantic head" in caplog.text


def test_training_cases_stay_inside_the_training_sequences(ml100k, ml100k_splits) -> None:
    cases = training_cases(ml100k, ml100k_splits, per_user=4, seed=0)
    users_with_cases = 0
    for sequence in list(ml100k_splits.train.values())[:200]:
        mine = [c for c in cases if len(c.history) < len(sequence) and
                np.array_equal(np.append(c.history, c.target), sequence[: len(c.history) + 1])]  # fmt: skip
        users_with_cases += bool(mine)
    assert users_with_cases >= 190
    assert len(cases) <= 4 * len(ml100k_splits.train)
    for case in cases[:500]:
        assert len(case.history) == len(case.timestamps) and len(case.history) >= 1
        assert np.all(np.diff(case.timestamps) >= 0)


def test_summary_examples_encode_the_scrubbed_summary_only(settings: Settings, ml100k, ml100k_splits) -> None:
    ws = Workspace(settings, "ml-100k", progress=False)
    device = build_device(settings, ws, EncoderShelf(settings.models_dir, ws.dataset), DeviceStore(":memory:"),
                          slm=None)  # fmt: skip
    seen: list[str] = []

    class Spy:
        name = ws.semantics.encoder.name

        def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
            seen.extend(texts)
            return ws.semantics.encoder.encode(texts, batch_size=batch_size)

    semantics = type(ws.semantics)(ws.semantics.table, ws.semantics.pca, ws.semantics.key, Spy())
    cases = [SummaryCase(inst.history, inst.history_ts, inst.target) for inst in ml100k_splits.valid[:20]]
    examples = summary_examples(device, TextSpace(semantics), cases, progress=False)
    assert examples.raw.shape == (20, 384) and list(examples.targets) == [c.target for c in cases]
    assert seen and all("Facts:" in text for text in seen)  # the rules' summary: computed facts
    titles = {ml100k.catalog[int(item)].title for case in cases for item in case.history}
    assert not any(title in text for text in seen for title in titles if len(title) > 3)  # no title crosses


def test_examples_are_built_once_and_read_back(tmp_path: Path) -> None:
    from tools.semantic_head import cached_examples

    calls = []
    made = SummaryExamples(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([5, 6, 7]),
                           [np.array([1, 2]), np.array([], dtype=np.int64), np.array([3])])  # fmt: skip

    def build() -> SummaryExamples:
        calls.append(1)
        return made

    first = cached_examples(tmp_path / "x.npz", build)
    again = cached_examples(tmp_path / "x.npz", build)
    assert len(calls) == 1 and first is made
    np.testing.assert_array_equal(again.raw, made.raw)
    np.testing.assert_array_equal(again.targets, made.targets)
    assert [s.tolist() for s in again.seen] == [[1, 2], [], [3]]

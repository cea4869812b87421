"""The index backends' one contract (exact, Chroma embedded, Chroma server) on a small SYNTHETIC catalogue:
the same candidates as exact search within recall tolerance, batched == unbatched, and the backend choice."""

from __future__ import annotations

import numpy as np
import pytest

from evals.synthetic import generate
from ground.errors import TandemError, UnknownTagError
from tests.chroma_server import chroma_server
from tools.tag_index import EXACT_BELOW_ITEMS, ExactTagIndex, TagIndex, choose_backend, chroma_client

USERS = 12


@pytest.fixture(scope="module")
def world(ml100k_semantics):
    return generate(3000, ml100k_semantics, num_tags=24, num_users=USERS, seed=7)


def _plans(world, tag_count=10, size=500):
    return [world.plan(user, tag_count, size) for user in range(USERS)]


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(set(got.tolist()) & set(want.tolist())) / len(want)


def test_synthetic_world_is_seeded_and_long_tailed(world, ml100k_semantics):
    again = generate(3000, ml100k_semantics, num_tags=24, num_users=USERS, seed=7)
    np.testing.assert_array_equal(again.semantics.table, world.semantics.table)
    assert all((a == b).all() for a, b in zip(again.histories, world.histories, strict=True))
    sizes = [len(world.catalog.tag_members(t)) for t in world.catalog.tags()]
    assert sizes[0] > 5 * sizes[-1], "tag popularity should fall off steeply (Zipf)"
    assert 2.0 < world.catalog.memberships / world.catalog.num_items < 3.5
    assert "SYNTHETIC" in world.semantics.key and world.semantics.table.shape == (3001, ml100k_semantics.dim)
    other = generate(3000, ml100k_semantics, num_tags=24, num_users=USERS, seed=8)
    assert not np.array_equal(other.semantics.table, world.semantics.table)


def test_exact_batched_equals_unbatched_and_is_the_true_top(world):
    exact = ExactTagIndex(world.catalog, world.semantics.table)
    queries, plans = world.queries(), _plans(world, 20, 1000)
    many = exact.retrieve_many(queries, plans, chunk=5)
    for query, plan, (ids, scores) in zip(queries, plans, many, strict=True):
        one_ids, one_scores = exact.retrieve_ids(query, plan)
        np.testing.assert_array_equal(ids, one_ids)
        np.testing.assert_array_equal(scores, one_scores)
        assert list(exact.retrieve(query, plan)) and [c.item_id for c in exact.retrieve(query, plan)] == ids.tolist()
        all_scores = world.semantics.table.astype(np.float64) @ query.astype(np.float64)
        for tag, n in plan.items():  # Eq. 3 by brute force in float64: each group's n best are in
            members = world.catalog.tag_members(tag)
            best = members[np.lexsort((members, -all_scores[members]))[:n]]
            assert set(best.tolist()) <= set(ids.tolist())
        assert (np.diff(scores) <= 0).all()


def _check_chroma(index: TagIndex, world) -> None:
    exact = ExactTagIndex(world.catalog, world.semantics.table)
    queries, plans = world.queries(), _plans(world)
    many = index.retrieve_many(queries, plans)
    recalls = []
    for query, plan, (ids, scores) in zip(queries, plans, many, strict=True):
        one_ids, one_scores = index.retrieve_ids(query, plan)
        np.testing.assert_array_equal(ids, one_ids)
        np.testing.assert_allclose(scores, one_scores, atol=1e-5)
        recalls.append(_recall(ids, exact.retrieve_ids(query, plan)[0]))
    assert np.mean(recalls) >= 0.95, recalls
    with pytest.raises(UnknownTagError, match="'no such tag'"):
        index.retrieve_many(queries[:2], [plans[0], {"no such tag": 3}])


def test_chroma_embedded_matches_exact_and_batches(world, tmp_path):
    index = TagIndex(chroma_client(None, tmp_path / "chroma"), world.catalog.name)
    index.build(world.catalog, world.semantics)
    _check_chroma(index, world)


@pytest.mark.server
def test_chroma_server_matches_exact_and_batches(world, tmp_path):
    with chroma_server(tmp_path / "server-db") as url:
        index = TagIndex(chroma_client(url, tmp_path / "unused"), world.catalog.name)
        index.build(world.catalog, world.semantics)
        _check_chroma(index, world)


def test_backend_choice_follows_the_setting_and_the_crossover():
    assert choose_backend("exact", 10**9, None) == "exact"
    assert choose_backend("chroma", 10, None) == "chroma"
    assert choose_backend("auto", EXACT_BELOW_ITEMS - 1, None) == "exact"
    assert choose_backend("auto", EXACT_BELOW_ITEMS, None) == "chroma"
    assert choose_backend("auto", 10, "http://127.0.0.1:8000") == "chroma", "a configured server is a choice"
    with pytest.raises(TandemError, match="auto, exact or chroma"):
        choose_backend("faiss", 10, None)


def test_workspace_retriever_uses_the_setting(settings):
    from tools.workspace import Workspace

    assert isinstance(Workspace(settings, "ml-100k", progress=False).retriever, ExactTagIndex)
    chroma = settings.model_copy(update={"index_backend": "chroma", "chroma_path": None})
    ws = Workspace(chroma, "ml-100k", progress=False)
    ws.index_for_build().build(ws.dataset.catalog, ws.semantics)
    assert isinstance(ws.retriever, TagIndex)

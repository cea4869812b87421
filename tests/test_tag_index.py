"""Chroma tag collections: build, retrieve (Eq. 3), idempotence, interrupted builds, embedded and server."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ground.errors import IndexMissingError, UnknownTagError
from tests.chroma_server import chroma_server
from tools.tag_index import ChromaUnavailableError, ExactTagIndex, TagIndex, chroma_client, fill_shares

PLAN = {"Animation": 10, "Children's": 10, "Comedy": 20, "1990s": 15}


def _query(semantics, text="a funny animated movie for children"):
    return semantics.project_texts([text])[0]


def _check_retrieval(index: TagIndex, ml100k, semantics) -> None:
    query = _query(semantics)
    got = index.retrieve(query, PLAN)
    want = ExactTagIndex(ml100k.catalog, semantics.table).retrieve(query, PLAN)
    assert len({c.item_id for c in got}) == len(got), "duplicates in merged candidates"
    assert [c.item_id for c in got] == [c.item_id for c in want]
    np.testing.assert_allclose([c.score for c in got], [c.score for c in want], atol=1e-4)
    assert all(set(c.tags) <= set(PLAN) for c in got)
    for cand in got:
        assert set(cand.tags) <= set(ml100k.catalog[cand.item_id].tags)
    assert index.nearest_tags(query, 3)[0][0] in {"Animation", "Children's", "Comedy"}


@pytest.fixture
def embedded_index(tmp_path, ml100k, ml100k_semantics) -> TagIndex:
    index = TagIndex(chroma_client(None, tmp_path / "chroma"), ml100k.name)
    index.build(ml100k.catalog, ml100k_semantics)
    return index


def test_embedded_retrieval_matches_exact_search(embedded_index, ml100k, ml100k_semantics):
    _check_retrieval(embedded_index, ml100k, ml100k_semantics)


def test_build_is_idempotent_and_force_replaces(embedded_index, ml100k, ml100k_semantics):
    first = embedded_index.manifest()["build_id"]
    again = embedded_index.build(ml100k.catalog, ml100k_semantics)
    assert not again.built and again.build_id == first
    forced = embedded_index.build(ml100k.catalog, ml100k_semantics, force=True)
    assert forced.built and forced.build_id != first
    names = {c.name for c in embedded_index.client.list_collections()}
    assert not any(first in name for name in names), "old build's collections must be dropped"


def test_interrupted_build_leaves_previous_index_intact(embedded_index, ml100k, ml100k_semantics, tmp_path):
    before = embedded_index.manifest()["build_id"]

    def crash(tag: str, done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embedded_index.build(ml100k.catalog, ml100k_semantics, force=True, on_progress=crash)
    reopened = TagIndex(chroma_client(None, tmp_path / "chroma"), ml100k.name)
    assert reopened.manifest()["build_id"] == before
    _check_retrieval(reopened, ml100k, ml100k_semantics)
    rebuilt = reopened.build(ml100k.catalog, ml100k_semantics, force=True)
    names = {c.name for c in reopened.client.list_collections()}
    assert all(rebuilt.build_id in n or n.endswith("manifest") for n in names), "half-written build not cleaned"


def test_interrupted_first_build_reads_as_missing(tmp_path, ml100k, ml100k_semantics):
    index = TagIndex(chroma_client(None, tmp_path / "chroma"), ml100k.name)

    def crash(tag: str, done: int, total: int) -> None:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        index.build(ml100k.catalog, ml100k_semantics, on_progress=crash)
    with pytest.raises(IndexMissingError, match="tandem index build"):
        TagIndex(chroma_client(None, tmp_path / "chroma"), ml100k.name).retrieve(_query(ml100k_semantics), PLAN)


def test_unknown_tag_and_missing_index_are_named(embedded_index, ml100k_semantics, tmp_path):
    with pytest.raises(UnknownTagError, match="'Space Opera'"):
        embedded_index.retrieve(_query(ml100k_semantics), {"Space Opera": 5, "Drama": 5})
    with pytest.raises(IndexMissingError, match="other embeddings"):
        embedded_index.manifest(expected_key="something-else")
    empty = TagIndex(chroma_client(None, tmp_path / "empty"), "ml-100k")
    with pytest.raises(IndexMissingError, match="tandem index build"):
        empty.tags()


def test_oversized_and_zero_counts(embedded_index, ml100k, ml100k_semantics):
    got = embedded_index.retrieve(_query(ml100k_semantics), {"Fantasy": 10_000, "Drama": 0})
    assert {c.item_id for c in got} == {i.item_id for i in ml100k.catalog.items_with_tag("Fantasy")}


@pytest.mark.server
def test_chroma_server_retrieval(tmp_path, ml100k, ml100k_semantics):
    with chroma_server(tmp_path / "server-db") as url:
        index = TagIndex(chroma_client(url, tmp_path / "unused"), ml100k.name)
        with pytest.raises(IndexMissingError):
            index.tags()
        report = index.build(ml100k.catalog, ml100k_semantics)
        assert report.built and report.tags == len(ml100k.catalog.tags())
        _check_retrieval(TagIndex(chroma_client(url, tmp_path / "unused"), ml100k.name), ml100k, ml100k_semantics)
        assert not index.build(ml100k.catalog, ml100k_semantics).built


def test_unreachable_server_is_a_clear_error(tmp_path):
    from tests.chroma_server import free_port

    with pytest.raises(ChromaUnavailableError, match="unreachable"):
        chroma_client(f"http://127.0.0.1:{free_port()}", tmp_path)


def test_a_small_groups_unused_share_goes_to_the_other_groups(embedded_index, ml100k, ml100k_semantics):
    fantasy = len(ml100k.catalog.items_with_tag("Fantasy"))  # 22 items on ML-100K
    plan = {"Fantasy": 100, "Drama": 100, "Comedy": 0}
    query = _query(ml100k_semantics)
    got = embedded_index.retrieve(query, plan)
    exact = ExactTagIndex(ml100k.catalog, ml100k_semantics.table)
    assert [c.item_id for c in got] == [c.item_id for c in exact.retrieve(query, plan)]  # both backends fill alike
    from_fantasy = {c.item_id for c in got if "Fantasy" in c.tags}
    from_drama = [c for c in got if "Drama" in c.tags]
    assert len(from_fantasy) == fantasy and len(from_drama) == 200 - fantasy  # Drama takes Fantasy's spare share
    assert not any("Comedy" in c.tags for c in got)  # a group the plan gives 0 stays empty


@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 2000)), min_size=1, max_size=20))
def test_fill_shares_places_n_when_the_groups_hold_it(groups):
    tags = [f"t{n}" for n in range(len(groups))]
    want = {tag: n for tag, (n, _) in zip(tags, groups, strict=True)}
    sizes = {tag: size for tag, (_, size) in zip(tags, groups, strict=True)}
    shares = fill_shares(want, sizes)
    assert set(shares) == set(want)
    assert all(0 <= shares[t] <= sizes[t] for t in tags) and all(shares[t] == 0 for t in tags if want[t] == 0)
    assert all(shares[t] >= min(want[t], sizes[t]) for t in tags)  # no group gets less than it asked and holds
    assert sum(shares.values()) == min(sum(want.values()), sum(sizes[t] for t in tags if want[t] > 0))

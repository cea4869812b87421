"""The compact wire (protocol wire 2): the id codec round trip, version negotiation (an old device gets today's
JSON), and identical ranks from both formats on seeded ML-100K users."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from agents.cloud.agent import CloudAgent
from agents.cloud.semantic import TextSpace
from agents.device.abstract import generate_abstract, history_from_ids
from agents.device.replies import UntrustedReplyError, expand_compact
from graph.boundary import cloud_handlers
from tools.fusion import rank_step
from tools.protocol import (
    IDS_BITMAP,
    IDS_VARINT,
    Abstract,
    CompactSemanticResponse,
    SemanticRequest,
    SemanticResponse,
    decode_ids,
    encode_ids,
)
from tools.tag_index import ExactTagIndex

ABSTRACT = Abstract(sanitized_query="a funny animated movie", behavior_summary="Likes comedies and animation.")


@pytest.mark.parametrize("size, universe", [(0, 10), (1, 10), (30, 100_000), (900, 1682), (5000, 1_000_000)])
def test_id_codec_round_trip_picks_the_smaller_code(size, universe):
    rng = np.random.default_rng(size)
    ids = np.sort(rng.choice(np.arange(1, universe + 1), size=size, replace=False))
    data = encode_ids(rng.permutation(ids))
    np.testing.assert_array_equal(decode_ids(data), ids)
    if size:
        expected = IDS_BITMAP if size * 8 > universe else IDS_VARINT  # dense sets: a bitmap is smaller
        assert data[0] == expected or size in (30, 5000)
        assert len(data) <= 1 + min(5 * size, (int(ids[-1]) + 8) // 8)


def test_malformed_compact_answers_are_refused():
    good = CompactSemanticResponse.encode(np.ones(4, np.float32), np.array([3, 7, 9]))
    for change in ({"count": 4}, {"e_sem": "not base64!"}, {"candidates": "gA=="}, {"e_sem": "AAA="}):
        with pytest.raises(ValidationError):
            CompactSemanticResponse.model_validate({**good.model_dump(), **change})
    outside = CompactSemanticResponse.encode(np.ones(4, np.float32), np.array([3, 7, 99]))
    with pytest.raises(UntrustedReplyError, match="outside the catalogue"):
        expand_compact(outside, np.zeros((11, 4), np.float32))
    with pytest.raises(UntrustedReplyError, match="dimensions"):
        expand_compact(good, np.zeros((11, 8), np.float32))


@pytest.fixture(scope="module")
def cloud(ml100k, ml100k_semantics) -> CloudAgent:
    return CloudAgent(space=TextSpace(ml100k_semantics), index=ExactTagIndex(ml100k.catalog, ml100k_semantics.table))


def test_an_old_device_gets_todays_format_and_a_new_one_the_compact(cloud, ml100k):
    handler = cloud_handlers(cloud)["semantic"]
    plan = cloud.plan(ABSTRACT).plan
    old_request = SemanticRequest(abstract=ABSTRACT, plan=plan)
    assert "wire" not in json.loads(old_request.model_dump_json()), "an unset version must not be sent"
    old = handler(old_request.model_dump_json().encode())
    assert set(json.loads(old)) == {"e_sem", "candidates", "scores"}
    SemanticResponse.model_validate_json(old)
    same = handler(SemanticRequest(abstract=ABSTRACT, plan=plan, wire=1).model_dump_json().encode())
    assert same == old
    new = handler(SemanticRequest(abstract=ABSTRACT, plan=plan, wire=2).model_dump_json().encode())
    CompactSemanticResponse.model_validate_json(new)
    assert len(new) < len(old) / 4
    with pytest.raises(ValidationError):
        handler(json.dumps({**json.loads(old_request.model_dump_json()), "wire": 3}).encode())


def test_compact_answers_give_identical_ranks_on_seeded_users(cloud, ml100k, ml100k_semantics):
    handler = cloud_handlers(cloud)["semantic"]
    rng = np.random.default_rng(0)
    tags = ml100k.catalog.tags()
    sizes = []
    for user in rng.choice(ml100k.num_users, size=25, replace=False):
        entries, unknown = history_from_ids(ml100k.sequences[user][-50:], ml100k.timestamps[user][-50:],
                                            ml100k.catalog)  # fmt: skip
        abstract = generate_abstract("", entries, None, known_tags=tags, unknown_ids=unknown).abstract
        plan = cloud.plan(abstract).plan  # the rule planner (no language model)
        old_raw = handler(SemanticRequest(abstract=abstract, plan=plan).model_dump_json().encode())
        new_raw = handler(SemanticRequest(abstract=abstract, plan=plan, wire=2).model_dump_json().encode())
        old = SemanticResponse.model_validate_json(old_raw)
        new = expand_compact(CompactSemanticResponse.model_validate_json(new_raw), ml100k_semantics.table)
        assert new.candidates == old.candidates and new.e_sem == old.e_sem
        np.testing.assert_array_equal(new.scores, old.scores)
        seen = ml100k.sequences[user]
        a = rank_step(np.array(old.candidates), np.array(old.scores), 1.0, seen)
        b = rank_step(np.array(new.candidates), np.array(new.scores), 1.0, seen)
        np.testing.assert_array_equal(a.items, b.items)
        sizes.append((len(old_raw), len(new_raw)))
    old_mean, new_mean = np.mean(sizes, axis=0)
    assert new_mean < 2048 and new_mean < old_mean / 4, sizes


def test_the_graph_ranks_the_same_on_both_wires_with_fewer_bytes_down(settings, ready, tmp_path):
    from graph.run import recommend
    from graph.runtime import TandemRuntime

    states = {}
    for wire in (1, 2):
        wired = settings.model_copy(update={"cloud_wire": wire})
        runtime = TandemRuntime.create(wired, "ml-100k", planner="rule", store_path=str(tmp_path / f"{wire}.sqlite"))
        states[wire] = recommend(runtime, "196", "a funny animated movie", allow_rerequest=False)
    assert states[1]["source"] == states[2]["source"] == "cloud"
    assert states[1]["ranked"] == states[2]["ranked"] and states[1]["candidates"] == states[2]["candidates"]
    down = {wire: sum(c.bytes_down for c in s["crossings"] if c.route == "semantic") for wire, s in states.items()}
    assert down[2] < down[1] / 4, down

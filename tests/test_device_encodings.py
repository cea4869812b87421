"""`HistoryEncodings`: e_str (CDA4Rec Eq. 4) computed once per encoder and history."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agents.device.encoders import EncoderShelf, HistoryEncodings
from graph.run import recommend
from graph.runtime import TandemRuntime
from tools.inference_thread import on_inference_thread
from tools.protocol import Plan, PlanResult

USER = "196"


class Counting:
    """Wraps an encoder's `encode` and counts the histories it was asked for."""

    def __init__(self, model) -> None:
        self.calls, self.original = 0, model.encode

    def __call__(self, histories):
        self.calls += len(histories)
        return self.original(histories)


@pytest.fixture
def shelf(settings, ready) -> EncoderShelf:
    return EncoderShelf(settings.models_dir, ready.dataset)


def test_a_history_is_encoded_once_and_equals_the_encoder_itself(shelf, ready, monkeypatch):
    model = shelf.get("SASRec")
    counting = Counting(model)
    monkeypatch.setattr(model, "encode", counting)
    memo = HistoryEncodings(shelf)
    one, two = ready.splits.test[0].history, ready.splits.test[1].history
    first = memo.get("SASRec", one)
    assert np.array_equal(memo.get("SASRec", list(one)), first) and counting.calls == 1  # the same items, any type
    assert np.allclose(first, counting.original([one])[0].numpy())
    memo.get("SASRec", two)
    assert counting.calls == 2  # another history is encoded


def test_a_new_model_on_the_shelf_is_never_answered_from_the_old_ones_encoding(shelf, ready):
    memo = HistoryEncodings(shelf)
    history = ready.splits.test[0].history
    before = memo.get("SASRec", history)
    changed = copy.deepcopy(shelf.get("SASRec"))
    with torch.no_grad():
        changed.item_emb.weight.mul_(2.0)
    shelf.put("SASRec", changed)
    after = memo.get("SASRec", history)
    assert np.allclose(after, changed.encode([history])[0].numpy()) and not np.allclose(after, before)


def test_a_failed_encoding_is_not_kept_and_a_call_on_the_inference_thread_does_not_wait_on_itself(shelf, ready,
                                                                                                    monkeypatch):
    model = shelf.get("SASRec")
    memo = HistoryEncodings(shelf)
    history = ready.splits.test[2].history
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda histories: (_ for _ in ()).throw(RuntimeError("out of memory")))
    with pytest.raises(RuntimeError, match="out of memory"):
        memo.get("SASRec", history)
    monkeypatch.setattr(model, "encode", original)
    assert np.allclose(memo.get("SASRec", history), original([history])[0].numpy())  # tried again
    fresh = ready.splits.test[3].history
    assert np.allclose(on_inference_thread(memo.get, "SASRec", fresh), original([fresh])[0].numpy())


def test_a_request_encodes_its_history_once_and_a_repeat_reuses_it(settings, ready, tmp_path, monkeypatch):
    rt = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "device.sqlite"))
    original_plan = rt.cloud.plan

    def sasrec_plan(abstract):
        plan = Plan.model_validate({**original_plan(abstract).plan.model_dump(), "encoder": "SASRec", "beta": 0.5})
        return PlanResult(plan=plan, status="parsed")

    rt.cloud.plan = sasrec_plan
    model = rt.device.encoders.get("SASRec")
    counting = Counting(model)
    monkeypatch.setattr(model, "encode", counting)
    first = recommend(rt, USER, "space adventure", allow_rerequest=False, use_cache=False)
    assert "device_sasrec" in first["route"] and counting.calls == 1
    again = recommend(rt, USER, "something funny", allow_rerequest=False, use_cache=False)
    assert "device_sasrec" in again["route"] and counting.calls == 1  # the same stored history: not re-encoded
    history = rt.device.history(USER).items
    assert np.allclose(rt.device.encode("SASRec", history).e_str, counting.original([np.asarray(history)])[0].numpy())

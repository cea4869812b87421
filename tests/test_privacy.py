"""Privacy is a feature: nothing from the raw history or raw query crosses to the cloud except the abstract."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from graph.boundary import Boundary, InProcessTransport, cloud_handlers
from graph.run import recommend
from graph.runtime import TandemRuntime
from tools.data import mentions_title

PII_QUERY = (
    "Hi, I'm Jane Doe, jane.doe@example.com, call me on +1 415 555 0134 or see https://jane.example.org - "
    "I loved {title}, want more like it"
)


class SpyTransport(InProcessTransport):
    """Records every payload that goes up to the cloud."""

    def __init__(self, handlers) -> None:
        super().__init__(handlers)
        self.sent: list[tuple[str, dict]] = []

    def send(self, route: str, payload: bytes) -> bytes:
        self.sent.append((route, json.loads(payload)))
        return super().send(route, payload)


@pytest.fixture
def spied(settings, ready, tmp_path) -> tuple[TandemRuntime, SpyTransport]:
    rt = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "d.sqlite"))
    spy = SpyTransport(cloud_handlers(rt.cloud))
    return replace(rt, boundary=Boundary(spy)), spy


def test_no_raw_history_or_pii_crosses_the_boundary(spied):
    rt, spy = spied
    catalog = rt.workspace.dataset.catalog
    user = rt.workspace.dataset.user_index("196")
    history = rt.workspace.dataset.sequences[user].tolist()
    favourite = catalog[history[-1]].title
    query = PII_QUERY.format(title=favourite)
    state = recommend(rt, "196", query, allow_rerequest=False)
    assert state["crossings"] and spy.sent

    for route, message in spy.sent:
        assert set(message) <= {"abstract", "plan", "wire"}, f"/{route} sent {set(message)}"
        assert message.get("wire", 2) in (1, 2), "the wire field names an answer format, nothing else"
        text = json.dumps(message)
        for secret in ("jane.doe@example.com", "415 555 0134", "jane.example.org", "Jane Doe"):
            assert secret not in text, f"{secret!r} crossed to the cloud on /{route}"
        assert query not in text
        abstract_text = json.dumps(message["abstract"])
        for item_id in set(history):
            title = catalog[item_id].title
            if len(title) >= 4:  # very short titles ("M", "Ed") collide with ordinary words
                assert not mentions_title(abstract_text, title), f"history title {title!r} crossed on /{route}"
        assert json.dumps(history[-5:])[1:-1] not in abstract_text, "raw item id sequence crossed"

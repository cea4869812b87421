"""The cloud as a separate HTTP service (`tandem cloud serve`), called by the device graph over loopback."""

from __future__ import annotations

import json

import httpx
import pytest

from graph.boundary import CloudRefusedError, HttpTransport
from graph.run import recommend
from graph.runtime import TandemRuntime
from tests.cloud_service import cloud_process


@pytest.fixture
def cloud_server(settings, ready, tmp_path):
    env = {"TANDEM_HOME": str(settings.home)}
    with cloud_process(tmp_path / "cloud.log", planner="rule", env=env) as (url, proc):
        yield url, proc, ready


@pytest.mark.server
def test_device_graph_over_http_cloud_then_cloud_goes_down(cloud_server, settings, tmp_path):
    url, proc, ws = cloud_server
    rt = TandemRuntime.create(settings, "ml-100k", planner="rule", cloud_url=url, store_path=str(tmp_path / "d.db"))
    assert rt.cloud is None, "a device talking to a remote cloud holds no cloud agent"
    state = recommend(rt, "196", "a funny animated movie", allow_rerequest=False)
    assert state["source"] == "cloud" and len(state["ranked"]) == 10
    assert [c.route for c in state["crossings"]] == ["plan", "semantic"]

    in_process = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "e.db"))
    local = recommend(in_process, "196", "a funny animated movie", allow_rerequest=False)
    assert local["ranked"] == state["ranked"], "HTTP and in-process clouds must run the same code"

    bad = httpx.post(f"{url}/plan", content=b'{"abstract": 42}', headers={"content-type": "application/json"})
    assert bad.status_code == 422
    newer = {"abstract": state["abstract"].model_dump(mode="json"), "plan": state["plan_result"].plan.model_dump(
        mode="json"), "a_field_of_a_later_version": 1}  # fmt: skip
    with pytest.raises(CloudRefusedError) as refused:  # how a cloud answers a field newer than itself
        HttpTransport(url).send("semantic", json.dumps(newer).encode())
    assert refused.value.refuses_field("a_field_of_a_later_version") and not refused.value.refuses_field("wire")
    assert refused.value.detail == "invalid message: 1 error(s), first at a_field_of_a_later_version"

    proc.terminate()
    proc.wait(timeout=20)
    rt.device.store.append("196", ws.dataset.catalog.tag_members("Horror")[:12].tolist())
    down = recommend(rt, "196", "a funny animated movie", allow_rerequest=False)
    assert down["source"] == "calibrated_cache"
    assert any("unreachable" in w for w in down["warnings"])

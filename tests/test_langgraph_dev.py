"""LangGraph's own dev server (`langgraph dev`, the `serve` extra) loads `langgraph.json` and answers a run offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port, serving

ROOT = Path(__file__).resolve().parent.parent
LANGGRAPH = Path(sys.executable).with_name("langgraph")

pytestmark = [pytest.mark.server, pytest.mark.skipif(not LANGGRAPH.exists(), reason="langgraph-cli not installed")]


def test_langgraph_dev_answers_a_run(ready, tmp_path):
    port = free_port()
    env = {**os.environ, "TANDEM_HOME": str(ready.settings.home), "LANGGRAPH_CLI_NO_ANALYTICS": "1",
           "LANGSMITH_TRACING": "false"}  # fmt: skip
    command = [str(LANGGRAPH), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
               "--config", str(ROOT / "langgraph.json")]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/ok", tmp_path / "langgraph-dev.log", name="langgraph dev", timeout=240,
                 stop_timeout=30, ready=lambda r: r.status_code == 200, cwd=ROOT, env=env):  # fmt: skip
        body = {"assistant_id": "tandem", "input": {"user": "196", "query": "a western from the 1960s"},
                "context": {"planner": "rule", "data": "ml-100k"}}  # fmt: skip
        answer = httpx.post(f"{url}/runs/wait", json=body, timeout=300).json()
        assert answer["user"] == "196" and len(answer["ranked"]) == 10, answer
        assert answer["route"][0] == "device_history"
        refused = httpx.post(f"{url}/runs/wait", json={**body, "context": {"planner": "oracle"}}, timeout=120)
        assert refused.status_code >= 400 or "error" in refused.text.lower()  # the run context is validated

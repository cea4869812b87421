"""LangGraph's own dev server (`langgraph dev`, the `serve` extra) loads `langgraph.json` and answers a run offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.chroma_server import free_port

ROOT = Path(__file__).resolve().parent.parent
LANGGRAPH = Path(sys.executable).with_name("langgraph")

pytestmark = [pytest.mark.server, pytest.mark.skipif(not LANGGRAPH.exists(), reason="langgraph-cli not installed")]


def test_langgraph_dev_answers_a_run(ready, tmp_path):
    port = free_port()
    env = {**os.environ, "TANDEM_HOME": str(ready.settings.home), "LANGGRAPH_CLI_NO_ANALYTICS": "1",
           "LANGSMITH_TRACING": "false"}  # fmt: skip
    log = open(tmp_path / "langgraph-dev.log", "wb")
    server = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser", "--no-reload",
         "--config", str(ROOT / "langgraph.json")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "langgraph-dev.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "langgraph dev did not start"
            time.sleep(1)
        body = {"assistant_id": "tandem", "input": {"user": "196", "query": "a western from the 1960s"},
                "context": {"planner": "rule", "data": "ml-100k"}}  # fmt: skip
        answer = httpx.post(f"{url}/runs/wait", json=body, timeout=300).json()
        assert answer["user"] == "196" and len(answer["ranked"]) == 10, answer
        assert answer["route"][0] == "device_history"
        refused = httpx.post(f"{url}/runs/wait", json={**body, "context": {"planner": "oracle"}}, timeout=120)
        assert refused.status_code >= 400 or "error" in refused.text.lower()  # the run context is validated
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

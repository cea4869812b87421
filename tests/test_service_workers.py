"""`tandem cloud serve --workers N`: N real worker processes on one loopback port, each with its own runtime,
answering the same protocol as one process (the service is stateless, so replicas need no coordination)."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.cloud_service import cloud_process

TOKEN = "test-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
ABSTRACT = {"sanitized_query": "a funny animated movie", "behavior_summary": "Likes comedies and animation."}

pytestmark = pytest.mark.server


def test_two_workers_start_and_answer_plan_and_semantic(settings, ready, tmp_path):
    log = tmp_path / "cloud.log"
    env = {"TANDEM_HOME": str(settings.home), "TANDEM_CLOUD_TOKEN": TOKEN}
    with cloud_process(log, planner="rule", env=env, args=("--workers", "2"), timeout=300) as (url, proc):
        for _ in range(6):
            plan = httpx.post(f"{url}/plan", content=json.dumps({"abstract": ABSTRACT}), headers=AUTH, timeout=60)
            assert plan.status_code == 200, plan.text
            body = {"abstract": ABSTRACT, "plan": plan.json()["plan"]}
            semantic = httpx.post(f"{url}/semantic", content=json.dumps(body), headers=AUTH, timeout=60)
            assert semantic.status_code == 200 and semantic.json()["candidates"], semantic.text
        assert httpx.post(f"{url}/plan", json={"abstract": ABSTRACT}, timeout=60).status_code == 401
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
    workers = set(re.findall(r"worker (\d+) serves ml-100k \(rule planner\)", log.read_text()))
    assert len(workers) == 2, log.read_text()[-2000:]

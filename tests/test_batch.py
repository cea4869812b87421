"""`tandem recommend --users FILE`: 50 users in one process, one JSON line each, bad lines reported and skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_batch_recommend_answers_fifty_users_in_one_process(ready, ml100k, tmp_path):
    users = ml100k.user_names[:50]
    queries = ["", "something funny"]
    lines = [json.dumps({"user": u, "query": queries[n % 2], "top": 5}) for n, u in enumerate(users)]
    lines[3:3] = ['{"user": "196", "query": "x", "colour": "red"}', "not json", "", '{"user": "no-such-user"}']
    batch = tmp_path / "requests.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    out = tmp_path / "answers.jsonl"
    env = {**os.environ, "TANDEM_HOME": str(ready.settings.home)}
    done = subprocess.run(
        [sys.executable, "-m", "tandem", "recommend", "--users", str(batch), "--out", str(out), "--planner", "rule"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900,
    )  # fmt: skip
    assert "Traceback" not in done.stderr
    assert done.returncode == 1  # some lines failed, and the exit code says so
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(answers) == 53
    good = [a for a in answers if "error" not in a]
    assert len(good) == 50 and {a["user"] for a in good} == set(users)
    assert all(len(a["recommendations"]) == 5 for a in good)
    errors = {a["line"]: a["error"] for a in answers if "error" in a}
    assert set(errors) == {4, 5, 7}  # the empty line 6 is skipped, not an error
    assert "colour" in errors[4] and "Invalid JSON" in errors[5] and "no-such-user" in errors[7]
    assert "50 of 53 requests answered" in done.stderr and "users/s" in done.stderr


def test_recommend_without_user_or_batch_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "tandem", "recommend"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and "--users FILE" in done.stderr and "Traceback" not in done.stderr

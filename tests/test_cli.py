"""The console script as a user runs it: real subprocesses, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TANDEM = str(Path(sys.executable).with_name("tandem"))


def run(*args: str, home: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, **env}
    if home is not None:
        environ["TANDEM_CHROMA_PATH"] = str(home)
    return subprocess.run([TANDEM, *args], capture_output=True, text=True, env=environ, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("data", "fetch", "ml-5m"), "unknown data set 'ml-5m'"),
        (("data", "info", "--data", "/"), "is not a MovieLens folder"),
        (("index", "query", "x", "--tags", "Drama"), "bad tag count"),
    ],
)
def test_bad_input_is_one_red_line(args, message, tmp_path):
    done = run(*args, home=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) <= 2  # one line, possibly soft-wrapped by the terminal width


def test_missing_index_then_build_then_query(tmp_path, ml100k_semantics):
    chroma = tmp_path / "chroma"
    missing = run("index", "query", "space adventure", home=chroma)
    assert missing.returncode == 1 and "tandem index build" in missing.stderr
    built = run("index", "build", home=chroma)
    assert built.returncode == 0 and "27 tags" in built.stdout
    again = run("index", "build", home=chroma)
    assert "already up to date" in again.stdout
    unknown = run("index", "query", "space", "--tags", "Space Opera=5", home=chroma)
    assert unknown.returncode == 1 and "unknown tag(s) 'Space Opera'" in unknown.stderr
    query = run("index", "query", "space adventure with aliens", "--tags", "Sci-Fi=5", home=chroma, COLUMNS="200")
    assert query.returncode == 0 and "Sci-Fi" in query.stdout


def test_help_works():
    done = run("-h")
    assert done.returncode == 0 and "index" in done.stdout and "data" in done.stdout


def _json(done: subprocess.CompletedProcess):
    import json

    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def test_listing_commands_print_json_for_scripts(built_index):
    """`--json` on every listing command: one JSON document on stdout, whatever the terminal width."""
    prompts = _json(run("prompts", "list", "--json"))
    assert {"abstract@1", "plan@1"} <= {p["prompt"] for p in prompts} and all(len(p["digest"]) == 12 for p in prompts)
    info = _json(run("data", "info", "--json", COLUMNS="40"))
    assert info["items"] == 1682 and sum(info["splits"][k] for k in ("train", "fewshot")) <= info["users"]
    found = _json(run("index", "query", "a funny cartoon", "--tags", "Animation=3", "--top", "2", "--json"))
    assert found["plan"] == {"Animation": 3} and len(found["candidates"]) == 2
    assert all("Animation" in c["tags"] and c["found_via"] == ["Animation"] for c in found["candidates"])
    listed = _json(run("models", "--json"))
    roles = ["device language model", "cloud language model", "cloud plan adapter (Eq. 8)", "text encoder (Eq. 1-2)",
             "cloud semantic head (Eq. 2 + 10)"]
    assert [row["role"] for row in listed] == roles
    assert listed[3]["request_precision"] in ("fp32", "bf16") and listed[3]["request_precision"] in listed[3]["model"]


def test_models_probe_exits_1_when_an_endpoint_is_down():
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    done = run("models", "--probe", "--json", TANDEM_EMBED_BACKEND="openai", TANDEM_EMBED_URL=url,
               TANDEM_EMBED_MODEL="text-embedding-3-small")  # fmt: skip
    rows = _json(done)
    assert done.returncode == 1
    assert [row["ok"] for row in rows] == [True, True, True, False, True] and url in rows[3]["error"]

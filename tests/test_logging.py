"""Logging: TANDEM_LOG_LEVEL=DEBUG shows each request's route and timings on stderr, and nothing at the default."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from graph.run import recommend
from graph.runtime import TandemRuntime
from ground.logging import configure_logging


def test_debug_log_names_the_route_and_timings_and_the_default_is_quiet(settings, ready, tmp_path):
    runtime = TandemRuntime.create(settings, "ml-100k", planner="rule", store_path=str(tmp_path / "d.sqlite"))
    console = Console(record=True, width=300)
    logger = configure_logging("WARNING", console=console)
    recommend(runtime, "196", "a [bold]western[/bold]", allow_rerequest=False)
    assert console.export_text() == ""
    logger.setLevel(logging.DEBUG)
    try:
        recommend(runtime, "196", "a western", allow_rerequest=False, use_cache=False)
    finally:
        logger.setLevel(logging.WARNING)
    text = console.export_text()
    assert "user '196': route device_history -> device_cache_check" in text and "cloud_plan" in text
    assert " ms" in text and "B up" in text
    assert len([h for h in logger.handlers if h.get_name() == "tandem-rich"]) == 1
    configure_logging("INFO", console=console)  # idempotent: still one handler
    assert len([h for h in logger.handlers if h.get_name() == "tandem-rich"]) == 1


def test_version_and_debug_level_from_the_environment():
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "tandem", "--version"], capture_output=True, text=True, cwd=root,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("tandem 0.")
    env = {**os.environ, "TANDEM_LOG_LEVEL": "DEBUG", "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-m", "tandem", "recommend", "-u", "196", "-q", "a western", "--planner",
                           "rule"], capture_output=True, text=True, cwd=root, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0 and "DEBUG" in done.stderr and "route device_history" in done.stderr

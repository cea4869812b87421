"""Bring your own models: both roles on real loopback servers, through the whole graph.

- `openai`: the stock `ChatOpenAI(base_url=...)` against llama-cpp-python's own OpenAI-compatible server,
  started here with the packaged Gemma 3 270M;
- `ollama`: the stock `ChatOllama` against tests/ollama_stub.py (Ollama's API, backed by the same model).
Both are slow (a language model on 2 cores) and start servers.
"""

from __future__ import annotations

import json

import pytest
from langchain_openai import ChatOpenAI

from agents.llm import gguf_path
from graph.run import recommend
from graph.runtime import TandemRuntime
from ground.settings import Settings
from tests.ollama_stub import OllamaStub
from tests.openai_server import MODEL_ALIAS, openai_server
from tools.plan_schema import plan_json_schema
from tools.protocol import Abstract

pytestmark = [pytest.mark.slow, pytest.mark.server]
ABSTRACT = Abstract(sanitized_query="a funny 1990s comedy.", behavior_summary="Facts: 40 interactions.")


@pytest.fixture(scope="module")
def openai_url(settings: Settings, tmp_path_factory) -> str:
    with openai_server(gguf_path(settings), tmp_path_factory.mktemp("openai")) as url:
        yield url


def _openai_settings(settings: Settings, url: str, **extra) -> Settings:
    roles = {f"{role}_llm_{key}": value for role in ("device", "cloud")
             for key, value in (("backend", "openai"), ("url", url), ("model", MODEL_ALIAS))}  # fmt: skip
    return settings.model_copy(update=roles | extra)


def test_openai_compatible_server_answers_a_request_through_the_graph(settings, ready, openai_url, tmp_path):
    """Both roles on the server, plans as free text (the 270M base model) repaired by Tandem."""
    own = _openai_settings(settings, openai_url, cloud_llm_structured="none", llm_timeout_s=900)
    runtime = TandemRuntime.create(own, "ml-100k", planner="llm", store_path=str(tmp_path / "d.sqlite"))
    assert isinstance(runtime.cloud.planner_model, ChatOpenAI)
    state = recommend(runtime, "196", "a funny animated movie", allow_rerequest=False)
    assert "cloud_plan" in state["route"] and len(state["ranked"]) == 10
    result = state["plan_result"]
    assert result.stats["backend"] == "openai" and result.stats["model"] == MODEL_ALIAS
    assert result.status in ("parsed", "repaired", "fallback")
    assert result.status != "fallback" or all(v.field != "model" for v in result.violations), result.violations


def test_ollama_answers_a_request_through_the_graph_with_both_roles(settings, ready, tmp_path):
    with OllamaStub(gguf_path(settings)) as stub:
        own = settings.model_copy(update={"llm_backend": "ollama", "ollama_host": stub.url, "llm_timeout_s": 900})
        runtime = TandemRuntime.create(own, "ml-100k", planner="llm", store_path=str(tmp_path / "d.sqlite"))
        state = recommend(runtime, "196", "something scary for tonight", allow_rerequest=False)
        assert len(state["ranked"]) == 10 and state["plan_result"].stats["backend"] == "ollama"
        models = {r["model"] for r in stub.requests}
        assert models == {own.ollama_cloud_model, own.ollama_device_model}  # each role on its own model
        plan_request = next(r for r in stub.requests if r["model"] == own.ollama_cloud_model)
        assert plan_request["format"] == plan_json_schema(runtime.cloud.known_tags())  # json_schema -> format
        json.loads(state["plan_result"].raw_text)

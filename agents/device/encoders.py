"""The device's structured encoders (CDA4Rec Eq. 4): loaded once from their checkpoints, never trained here.

`EncoderShelf.get("SASRec")` returns the trained encoder of this data set, or raises a one-line error naming
the command that trains it. CHORD's device half (the profiler of CHORD Eq. 6) comes from the CHORD checkpoint
beside the encoder's, and the per-user quantized copies (CHORD Eq. 2-4) are kept per strategy.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.checkpoints import CheckpointError, default_checkpoint, file_digest, load_encoder
from tools.chord import Chord, StrategyError, apply_strategy, default_chord_checkpoint, load_chord, strategy_bits
from tools.compute import resolve_device
from tools.cooperative import chosen_checkpoint
from tools.data import Dataset
from tools.encoders import SequentialEncoder
from tools.inference_thread import in_inference_thread, submit_to_inference_thread
from tools.protocol import ChordStrategy
from tools.quant import DeviceResources, average_bits, resource_transform

ENCODER_FILES: dict[str, str] = {"SASRec": "sasrec", "SURGE": "surge", "Caser": "caser"}
QUANTIZED_KEPT = 64
ENCODINGS_KEPT = 256


class CheckpointMissingError(CheckpointError):
    """A model the request needs has not been trained yet; the message names the command that trains it."""


@dataclass
class EncoderShelf:
    """Trained encoders of one data set by plan name ("SASRec", "SURGE"), loaded lazily and once."""

    models_dir: Path
    dataset: Dataset
    loss: str = "ce"
    device: str = "cpu"  # where full-precision encoders run: auto | cpu | cuda (settings.torch_device)
    follow_cooperative: bool = True  # load the cooperative copy when it won on validation (LSC4Rec 3.2.2)
    _loaded: dict[str, SequentialEncoder] = field(default_factory=dict, repr=False)
    _chords: dict[str, Chord | None] = field(default_factory=dict, repr=False)
    _quantized: OrderedDict[str, tuple[SequentialEncoder, float]] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def base_path(self, name: str) -> Path:
        """Where `tandem train` writes the encoder's checkpoint (`<encoder>-<loss>.pt`)."""
        return default_checkpoint(self.models_dir, ENCODER_FILES[name], self.dataset, self.loss)

    def path(self, name: str) -> Path:
        """The checkpoint `get` loads: the trained one, or its cooperatively tuned copy when that won on the
        device's criterion (`tools.cooperative.chosen_checkpoint`)."""
        base = self.base_path(name)
        return chosen_checkpoint(base) if self.follow_cooperative else base

    def put(self, name: str, encoder: SequentialEncoder) -> None:
        """Use `encoder` for `name` (a freshly trained model, or a test's seeded one)."""
        with self._lock:
            self._loaded[name] = encoder.eval()

    def checkpoint_digests(self, names: Sequence[str] = ("SASRec", "SURGE")) -> dict[str, str]:
        """Each encoder's checkpoint digest (first 12 hex digits; "none" without a checkpoint file): what a model
        fitted to the device's rankings, such as LSC4Rec's re-request threshold, was fitted with."""
        paths = {name: self.path(name) for name in names}  # `path` may read a cooperative decision: once each
        return {name: file_digest(path)[:12] if path.is_file() else "none" for name, path in paths.items()}

    def available(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded or self.path(name).is_file()

    def get(self, name: str) -> SequentialEncoder:
        with self._lock:
            if name not in self._loaded:
                path = self.path(name)
                if not path.is_file():
                    raise CheckpointMissingError(
                        f"no {name} checkpoint for {self.dataset.name} at {path}: run `tandem setup --data "
                        f"{self.dataset.name}` (or `tandem train --encoder {ENCODER_FILES[name]} --data "
                        f"{self.dataset.name}`)"
                    )
                self._loaded[name] = load_encoder(path, self.dataset, resolve_device(self.device))
            return self._loaded[name]

    # -- CHORD --------------------------------------------------------------------------------------------
    def put_chord(self, name: str, chord: Chord | None) -> None:
        """Use `chord` for encoder `name` (freshly trained, e.g. by a benchmark; None: no CHORD)."""
        with self._lock:
            self._chords[name] = chord
            self._quantized.clear()

    def chord(self, name: str) -> Chord | None:
        """The CHORD pair trained for encoder `name`, or None when none was trained."""
        with self._lock:
            if name not in self._chords:
                path = default_chord_checkpoint(self.models_dir, ENCODER_FILES[name], self.dataset)
                self._chords[name] = load_chord(path, self.get(name)) if path.is_file() else None
            return self._chords[name]

    def quantized(
        self, name: str, strategy: ChordStrategy, resources: DeviceResources
    ) -> tuple[SequentialEncoder, float]:
        """CHORD Eq. 2-4: the encoder quantized to `strategy` fitted to the device's budget, and its average bits.

        Decoding, the resource transform T and quantization run once per distinct strategy and budget.
        """
        key = f"{name}:{strategy.codes}:{resources.max_avg_bits}"
        with self._lock:
            if key not in self._quantized:
                chord = self.chord(name)
                if chord is None:
                    raise StrategyError(f"no CHORD trained for {name}: the device cannot apply a strategy")
                fan_in = [spec.fan_in for spec in chord.specs]
                bits = average_bits(resource_transform(strategy_bits(strategy), resources, fan_in), fan_in)
                source = self.get(name)
                if source.item_emb.weight.device.type != "cpu":  # CHORD models a phone: quantize a CPU copy
                    source = copy.deepcopy(source).cpu()
                self._quantized[key] = (apply_strategy(source, strategy, resources), bits)
                while len(self._quantized) > QUANTIZED_KEPT:
                    self._quantized.popitem(last=False)
            self._quantized.move_to_end(key)
            return self._quantized[key]


class HistoryEncodings:
    """e_str of CDA4Rec Eq. 4 at full precision, computed once per encoder and history on the inference thread.

    A re-request (LSC4Rec Eq. 12), the SCaLRec cache path and the next chat turn on an unchanged history reuse the
    encoding instead of running the encoder again (ML-1M's cache path p50 7.7-8.0 -> 5.5-5.9 ms,
    `evals.bench_graph`). An entry is valid only for the encoder object that made it (a model `put` on the shelf is
    encoded afresh); the newest `kept` histories are kept.

    Starting the encoder early (when the device reads the history, to overlap the abstract and the plan) was
    measured and dropped: on 2 cores the encoder's torch work and the request's Python then compete, and the full
    request was 1-2 ms slower (27.1-28.0 vs 25.5-25.7 ms p50).
    """

    def __init__(self, shelf: EncoderShelf, kept: int = ENCODINGS_KEPT) -> None:
        self.shelf = shelf
        self.kept = kept
        self._entries: OrderedDict[tuple[str, bytes], tuple[SequentialEncoder, Future[np.ndarray]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, history: Sequence[int]) -> np.ndarray:
        """e_str [d] of `history` under encoder `name` (the shelf's `get` raises when it has no checkpoint)."""
        if in_inference_thread():  # work queued from here would wait behind the caller itself: encode directly
            return _encode(self.shelf.get(name), np.asarray(history, dtype=np.int64))
        key, future = self._future(name, history)
        try:
            return future.result()
        except Exception:
            with self._lock:  # a failed encoding is not kept: the next request tries again
                if key in self._entries and self._entries[key][1] is future:
                    del self._entries[key]
            raise

    def _future(self, name: str, history: Sequence[int]) -> tuple[tuple[str, bytes], Future[np.ndarray]]:
        model = self.shelf.get(name)
        items = np.asarray(history, dtype=np.int64)
        key = (name, hashlib.blake2b(items.tobytes(), digest_size=16).digest())
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] is not model:
                entry = (model, submit_to_inference_thread(_encode, model, items))
                self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.kept:
                self._entries.popitem(last=False)
            return key, entry[1]


def _encode(model: SequentialEncoder, history: np.ndarray) -> np.ndarray:
    return model.encode([history])[0].numpy()

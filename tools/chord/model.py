"""CHORD end to end: the device profiler + cloud hypernetworks, the strategy message, training, scoring.

Who runs what (CHORD Fig. 2):
- device: `Chord.profile(histories)` -> z (Eq. 6); later `apply_strategy(encoder, strategy, resources)`
  decodes the 2-bit codes, applies T (Eq. 4) and swaps in packed mixed-precision layers (Eq. 2-3);
- cloud: `Chord.strategy_for_profile(z)` -> `ChordStrategy` (Eq. 7-13), the only thing sent back.
`Chord.strategy_for_user(history)` chains both for in-process use and tests.

Training (`train_chord`) fits the profiler and the hypernetworks against a FROZEN pretrained encoder with
the recommendation loss (full softmax cross-entropy of the next item) of the per-user quantized encoder.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ground.errors import TandemError
from tools.compute import machine_threads
from tools.data import Dataset
from tools.encoders import SequentialEncoder, pad_left
from tools.protocol import ChordStrategy, UserProfile
from tools.quant import (
    DeviceResources,
    Scheme,
    average_bits,
    decode_strategy,
    encode_strategy,
    memory_report,
    quantizable_layers,
    quantize_model,
    resource_transform,
)

from .hypernet import ChordHypernet, LayerSpec, Sensitivity, layer_adjust, layer_specs, level_bits, tier
from .mixed import MixedPrecisionEncoder
from .profile import UserProfiler


class StrategyError(TandemError):
    """A strategy that does not fit the device's encoder."""


@dataclass
class ChordConfig:
    """Everything that decides a CHORD model and its training run."""

    beta: float = 0.25  # Eq. 12: top beta -> 8 bits, next beta -> 4 bits, rest -> 2 bits
    n_adjust: int = 1  # Eq. 13: layers boosted / compressed per user
    profile_dim: int = 32  # l of Eq. 6
    profile_len: int = 50  # newest interactions the GRU reads
    hidden: int = 64
    rank: int = 4  # rank of the element-level hypernetworks (Eq. 8)
    scheme: Scheme = "minmax"
    temperature: float = 0.5  # of the straight-through relaxations (Eq. 12-13)
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    seed: int = 42
    threads: int | None = None  # None: every core this process may use (`tools.compute.machine_threads`)
    time_budget_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def strategy_bits(strategy: ChordStrategy) -> list[Tensor]:
    """Device side of CHORD Eq. 4: the strategy's decoded bit-widths, n x int64 [C_i]."""
    return decode_strategy(strategy.payload(), strategy.channels)


@dataclass
class Chord:
    """The trained CHORD pair: device profiler (Eq. 6) + cloud hypernetworks (Eq. 7-13) for one encoder."""

    encoder_name: str
    specs: list[LayerSpec]
    profiler: UserProfiler
    hypernet: ChordHypernet
    config: ChordConfig

    def modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"profiler": self.profiler, "hypernet": self.hypernet})

    # -- device ---------------------------------------------------------------------------------------
    def profile(self, histories: Sequence[np.ndarray]) -> Tensor:
        """CHORD Eq. 6 on the device: histories -> z [B, l]."""
        self.profiler.eval()
        return self.profiler.profile(histories)

    # -- cloud ----------------------------------------------------------------------------------------
    def levels(self, z: Tensor, beta: float | None = None) -> list[Tensor]:
        """CHORD Eq. 7-13: z [B, l] -> one-hot levels n x [B, C_i, 4] (straight-through in training)."""
        sens: Sensitivity = self.hypernet(z)
        beta = self.config.beta if beta is None else beta
        tiers = [tier(w, beta, self.config.temperature) for w in sens.weighted()]  # Eq. 11-12
        return layer_adjust(tiers, sens.layer, self.config.n_adjust, self.config.temperature)  # Eq. 13

    @torch.no_grad()
    def bits(self, z: Tensor, beta: float | None = None) -> list[Tensor]:
        """Hard per-channel bit-widths for a batch of profiles: n x int64 [B, C_i]."""
        self.hypernet.eval()
        return level_bits(self.levels(z, beta))

    def strategy_for_profile(self, z: Tensor | UserProfile, beta: float | None = None) -> ChordStrategy:
        """Cloud: one user's profile -> the encoded strategy sigma'_d (CHORD Eq. 12-13)."""
        zt = torch.tensor(z.z) if isinstance(z, UserProfile) else z
        bits = [b[0] for b in self.bits(zt.view(1, -1).float(), beta)]
        payload = encode_strategy(bits)
        return ChordStrategy(encoder=self.encoder_name, layers=[s.name for s in self.specs],
                             channels=[s.channels for s in self.specs], codes=base64.b64encode(payload).decode(),
                             beta=self.config.beta if beta is None else beta)  # fmt: skip

    def strategy_for_user(self, history: np.ndarray, beta: float | None = None) -> ChordStrategy:
        """Device profile (Eq. 6) + cloud strategy (Eq. 7-13) in one call, for in-process use."""
        return self.strategy_for_profile(self.profile([history])[0], beta)


def new_chord(encoder: SequentialEncoder, config: ChordConfig) -> Chord:
    """An untrained CHORD for `encoder`'s quantizable layers."""
    torch.manual_seed(config.seed)
    specs = layer_specs(encoder)
    if not specs:
        raise StrategyError(f"{encoder.name} has no linear or convolution layer to quantize")
    profiler = UserProfiler(encoder.item_emb.weight.detach(), config.profile_dim, config.profile_len)
    hypernet = ChordHypernet(specs, config.profile_dim, config.hidden, config.rank)
    return Chord(encoder.name, specs, profiler, hypernet, config)


# -- the device applies a strategy --------------------------------------------------------------------------
def apply_strategy(
    encoder: SequentialEncoder,
    strategy: ChordStrategy,
    resources: DeviceResources | None = None,
    scheme: Scheme = "minmax",
) -> SequentialEncoder:
    """Device: decode sigma'_d, adapt it with T (CHORD Eq. 4), quantize the frozen encoder (Eq. 2-3).

    Returns a new encoder whose linear / conv layers hold packed integer weights; `encoder` is untouched.
    """
    specs = layer_specs(encoder)
    if [s.name for s in specs] != strategy.layers or [s.channels for s in specs] != strategy.channels:
        raise StrategyError(f"strategy was made for other layers than this {encoder.name}'s")
    bits = strategy_bits(strategy)
    if resources is not None:
        bits = resource_transform(bits, resources, [s.fan_in for s in specs])
    return quantize_model(encoder, {s.name: b for s, b in zip(specs, bits, strict=True)}, scheme)  # type: ignore[return-value]


def strategy_average_bits(strategy: ChordStrategy, specs: Sequence[LayerSpec]) -> float:
    """Average bits per weight of a strategy on the encoder's layers."""
    return average_bits(strategy_bits(strategy), [s.fan_in for s in specs])


# -- training -----------------------------------------------------------------------------------------------
@dataclass
class ChordTrainResult:
    chord: Chord
    losses: list[float]
    steps: int
    seconds: float
    stopped_by: str


def _samples(train: dict[int, np.ndarray], rng: np.random.Generator, size: int, max_len: int) -> tuple[list, Tensor]:
    """`size` (history, next item) pairs: a random user and a cut point in the newer half of the sequence."""
    seqs = [s for s in train.values() if len(s) >= 3]
    histories, targets = [], []
    for idx in rng.integers(0, len(seqs), size=size):
        s = seqs[idx]
        cut = int(rng.integers(max(1, len(s) // 2), len(s)))
        histories.append(s[max(0, cut - max_len) : cut])
        targets.append(int(s[cut]))
    return histories, torch.tensor(targets, dtype=torch.long)


def chord_loss(chord: Chord, mixed: MixedPrecisionEncoder, seqs: Tensor, targets: Tensor) -> Tensor:
    """Recommendation loss of the per-user quantized encoder: softmax CE of the next item over all items."""
    z = chord.profiler(seqs)  # [B, l], Eq. 6
    mixed.set_levels(chord.levels(z))  # Eq. 7-13 (straight-through)
    user = mixed(seqs)  # [B, d]
    mixed.set_levels(None)
    logits = user @ mixed.encoder.item_emb.weight[1:].T  # [B, V]
    return F.cross_entropy(logits, targets - 1)


def train_chord(
    encoder: SequentialEncoder,
    train: dict[int, np.ndarray],
    config: ChordConfig,
    log: Any = None,
) -> ChordTrainResult:
    """Fit the profiler (Eq. 6) and hypernetworks (Eq. 7-9) through Eq. 10-13 against the frozen encoder."""
    torch.set_num_threads(config.threads or machine_threads())
    chord = new_chord(encoder, config)
    mixed = MixedPrecisionEncoder(encoder, chord.specs, config.scheme)
    params = [p for p in chord.modules().parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr)
    rng = np.random.default_rng(config.seed)
    chord.profiler.train()
    chord.hypernet.train()
    losses: list[float] = []
    started, stopped_by = time.perf_counter(), "steps"
    for step in range(1, config.steps + 1):
        histories, targets = _samples(train, rng, config.batch_size, encoder.max_len)
        loss = chord_loss(chord, mixed, pad_left(histories, encoder.max_len), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if log is not None and (step % 25 == 0 or step == 1):
            log(f"chord step {step}: loss {np.mean(losses[-25:]):.4f}")
        if config.time_budget_s is not None and time.perf_counter() - started > config.time_budget_s:
            stopped_by = "time budget"
            break
    chord.profiler.eval()
    chord.hypernet.eval()
    return ChordTrainResult(chord, losses, len(losses), time.perf_counter() - started, stopped_by)


# -- evaluation ---------------------------------------------------------------------------------------------
class ChordScorer:
    """`tools.metrics.HistoryScorer` for CHORD: every user is scored by its OWN packed quantized encoder.

    Records each user's average bits and strategy size, so a benchmark can report them.
    """

    def __init__(self, chord: Chord, encoder: SequentialEncoder, beta: float | None = None,
                 resources: DeviceResources | None = None) -> None:  # fmt: skip
        self.chord, self.encoder, self.beta, self.resources = chord, encoder, beta, resources
        self.avg_bits: list[float] = []
        self.payload_bits: list[int] = []
        self.memory: list[int] = []

    def score_histories(self, histories: Sequence[np.ndarray]) -> Tensor:  # -> [B, V + 1]
        z = self.chord.profile(histories)  # [B, l] on the device (Eq. 6)
        rows = []
        for b, history in enumerate(histories):
            strategy = self.chord.strategy_for_profile(z[b], self.beta)  # cloud (Eq. 7-13)
            model = apply_strategy(self.encoder, strategy, self.resources, self.chord.config.scheme)  # device
            rows.append(model.score_histories([history]))
            bits = strategy_bits(strategy)
            if self.resources is not None:
                bits = resource_transform(bits, self.resources, [s.fan_in for s in self.chord.specs])
            self.avg_bits.append(average_bits(bits, [s.fan_in for s in self.chord.specs]))
            self.payload_bits.append(strategy.payload_bits)
            self.memory.append(memory_report(model).total_bytes)
        return torch.cat(rows)


class FakeQuantChordScorer:
    """The batched fake-quantized counterpart of `ChordScorer` (same strategies), for checks and speed."""

    def __init__(self, chord: Chord, encoder: SequentialEncoder, beta: float | None = None) -> None:
        self.chord, self.beta = chord, beta
        self.mixed = MixedPrecisionEncoder(encoder, chord.specs, chord.config.scheme)

    @torch.no_grad()
    def score_histories(self, histories: Sequence[np.ndarray]) -> Tensor:  # -> [B, V + 1]
        self.chord.hypernet.eval()
        z = self.chord.profile(histories)
        self.mixed.set_levels([m.detach() for m in self.chord.levels(z, self.beta)])
        user = self.mixed(pad_left(histories, self.mixed.encoder.max_len))
        self.mixed.set_levels(None)
        return self.mixed.full_scores(user)


# -- persistence --------------------------------------------------------------------------------------------
def encoder_digest(encoder: SequentialEncoder) -> str:
    """A short hash of the frozen weights CHORD quantizes: a CHORD is only valid for those exact weights."""
    digest = hashlib.sha1()
    for _, module in quantizable_layers(encoder):
        digest.update(module.weight.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_chord(path: Path, chord: Chord, encoder: SequentialEncoder | None = None) -> Path:
    """Profiler + hypernetwork weights, the layer specs, the config (+ the encoder's digest), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"encoder": chord.encoder_name, "specs": [asdict(s) for s in chord.specs],
               "config": asdict(chord.config), "state_dict": chord.modules().state_dict(),
               "encoder_digest": encoder_digest(encoder) if encoder is not None else None}  # fmt: skip
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def default_chord_checkpoint(models_dir: Path, encoder: str, dataset: Dataset) -> Path:
    """<models_dir>/<data>-<fingerprint>/chord-<encoder>.pt, beside the encoder checkpoints."""
    return Path(models_dir) / f"{dataset.name}-{dataset.fingerprint()}" / f"chord-{encoder}.pt"


def load_chord(path: Path, encoder: SequentialEncoder) -> Chord:
    """Rebuild a saved CHORD for `encoder`, refusing one made for other layers."""
    path = Path(path)
    if not path.is_file():
        raise StrategyError(f"no CHORD checkpoint at {path}")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    specs = [LayerSpec(**s) for s in payload["specs"]]
    if specs != layer_specs(encoder):
        raise StrategyError(f"CHORD checkpoint {path.name} was trained for other layers than this {encoder.name}'s")
    if payload.get("encoder_digest") not in (None, encoder_digest(encoder)):
        raise StrategyError(
            f"CHORD checkpoint {path.name} was trained against other {encoder.name} weights; retrain it"
        )
    chord = new_chord(encoder, ChordConfig(**payload["config"]))
    chord.modules().load_state_dict(payload["state_dict"])
    chord.profiler.eval()
    chord.hypernet.eval()
    return chord

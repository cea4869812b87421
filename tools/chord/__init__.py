"""CHORD (hybrid-precision on-device models): per-user channel-wise mixed precision chosen in the cloud.

The device profiles its user with a GRU (Eq. 6) and sends the profile z; cloud hypernetworks turn z into
filter-, element- and layer-level sensitivities (Eq. 7-11), tier the channels into 8/4/2 bits (Eq. 12)
and adjust whole layers (Eq. 13); the strategy travels as 2 bits per output channel and the device
quantizes its frozen encoder with it (Eq. 2-4, `tools.quant`).
"""

from .hypernet import (
    ChordHypernet,
    LayerSpec,
    Sensitivity,
    channel_l1,
    layer_adjust,
    layer_specs,
    level_bits,
    tier,
    tier_counts,
    weighted_sensitivity,
)
from .mixed import MixedPrecisionEncoder, PerUserLayer
from .model import (
    Chord,
    ChordConfig,
    ChordScorer,
    ChordTrainResult,
    FakeQuantChordScorer,
    StrategyError,
    apply_strategy,
    chord_loss,
    default_chord_checkpoint,
    encoder_digest,
    load_chord,
    new_chord,
    save_chord,
    strategy_average_bits,
    strategy_bits,
    train_chord,
)
from .profile import UserProfiler

__all__ = [
    "Chord", "ChordConfig", "ChordHypernet", "ChordScorer", "ChordTrainResult",
    "FakeQuantChordScorer", "LayerSpec", "MixedPrecisionEncoder", "PerUserLayer", "Sensitivity", "StrategyError",
    "UserProfiler", "apply_strategy", "channel_l1", "chord_loss", "default_chord_checkpoint",
    "encoder_digest", "layer_adjust", "layer_specs", "level_bits", "load_chord", "new_chord", "save_chord",
    "strategy_average_bits", "strategy_bits", "tier", "tier_counts", "train_chord", "weighted_sensitivity",
]  # fmt: skip

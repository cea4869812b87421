"""Paired comparisons of two planning prompts, case by case: named metrics, NaN cases dropped, a verdict.

The interval itself is the one paired bootstrap of the project (`tools.metrics.paired_bootstrap`: per-case
differences resampled, percentile interval), as in every `eval rec` table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from tools.metrics import paired_bootstrap as bootstrap_difference

RESAMPLES = 2000


class PairedDelta(BaseModel):
    """mean(b - a) over the paired cases, with its bootstrap interval."""

    metric: str
    a: float
    b: float
    delta: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        return f"{self.delta:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_bootstrap(
    metric: str, a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0,
    level: float = 0.95,
) -> PairedDelta:
    """The paired bootstrap interval of mean(b - a); cases where either value is NaN are dropped."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.shape} vs {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    if n == 0:
        return PairedDelta(metric=metric, a=float("nan"), b=float("nan"), delta=0.0, low=0.0, high=0.0, n=0)
    interval = bootstrap_difference(y, x, samples=resamples, seed=seed, level=level)  # mean(b - a)
    return PairedDelta(metric=metric, a=float(x.mean()), b=float(y.mean()), delta=interval.diff,
                       low=interval.low, high=interval.high, n=n)  # fmt: skip

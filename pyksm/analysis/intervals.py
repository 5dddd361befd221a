"""The median of a few repetitions and its 95 % interval (percentile bootstrap).

Experiments repeat each mode a handful of times (n = 3..10). The interval of
the median is a percentile bootstrap: resample the n values with replacement
``RESAMPLES`` times, take each resample's median, and cut the 2.5 % and
97.5 % order statistics of those medians (no interpolation between them, so
``inf`` — "never reached" — stays a value). The generator is seeded
(``SEED``): the same values always give the same interval.

With few values the bootstrap says little, and the interval degrades:

- n = 1: the value; no interval (``low``/``high`` are None);
- n = 2: the two values as the interval (``kind == "range"``): every
  resample's median lies between them, and 95 % of them cannot say more;
- n >= 3: the bootstrap (``kind == "bootstrap"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["CONFIDENCE", "RESAMPLES", "SEED", "Interval", "median_interval"]

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 16

Kind = Literal["none", "value", "range", "bootstrap"]


@dataclass(frozen=True)
class Interval:
    """The median of ``values`` and its interval; ``n`` values counted."""

    median: float | None
    low: float | None
    high: float | None
    n: int
    values: tuple[float, ...]
    kind: Kind


def _median(x: np.ndarray) -> np.ndarray:
    """Medians along the last axis, ``inf``-safe: of an even count, the mean
    of the middle two (inf when either is)."""
    s = np.sort(x, axis=-1)
    k = s.shape[-1]
    lo = s[..., (k - 1) // 2]
    hi = s[..., k // 2]
    with np.errstate(invalid="ignore"):  # inf - inf: that branch is not taken
        out: np.ndarray = np.where(np.isinf(hi), hi, lo + (hi - lo) / 2)
    return out


def median_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """The median of ``values`` (NaN-free; ``inf`` allowed) with its interval."""
    x = np.asarray(values, dtype=float)
    if np.isnan(x).any():
        raise ValueError("median_interval: NaN among the values")
    n = int(x.size)
    kept = tuple(float(v) for v in x)
    if n == 0:
        return Interval(None, None, None, 0, kept, "none")
    median = float(_median(x))
    if n == 1:
        return Interval(median, None, None, 1, kept, "value")
    if n == 2:
        return Interval(median, float(x.min()), float(x.max()), 2, kept, "range")
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, n, size=(resamples, n))]
    meds = np.sort(_median(draws))
    tail = (1 - confidence) / 2
    low = meds[max(0, math.floor(tail * resamples))]
    high = meds[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return Interval(median, float(low), float(high), n, kept, "bootstrap")

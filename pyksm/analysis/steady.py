"""The steady state of a long run: captured sharing over its last window, and
whether it trends down.

- Captured sharing over a window = ∫ pages_sharing dt / ∫ oracle dt over
  [end - W, end] (trapezoids over the samples, the value at the window's
  edges interpolated): the report's captured sharing (pyksm.report.metrics),
  restricted to the window. A ratio of integrals, not a mean of per-second
  ratios: a second with little to share weighs little.
- The window: the last ``WINDOW_S`` (600 s) of the run. A run shorter than
  twice that (less one bin: samples start and end a second or so inside
  the run) uses its last half (the fill at the start stays out) and is
  marked ``shortened``; ``window_s`` says what was used.
- Trend: the window is cut into ``BIN_S`` (30 s) bins; each bin's captured
  sharing (the same ratio of integrals) is a point at the bin's centre. The
  slope is Theil-Sen's (the median of all pairwise slopes), given per 10
  minutes, with Sen's (1968) rank interval at ``CONFIDENCE`` (95 %): the
  order statistics of the pairwise slopes cut at (N -+ z*s)/2, s^2 =
  n(n-1)(2n+5)/18 (Kendall's S, no tie correction; scipy.stats.theilslopes'
  interval). Deterministic, no resampling; bins of 30 s rather than 1 s
  samples so that neighbouring points are less alike (the interval assumes
  independent points). Bins without oracle are left out.
- Verdict: "no downward trend" when the interval's upper end is >= 0 or the
  slope's magnitude is below ``TOLERANCE`` (0.02 of the oracle per 10
  minutes); "downward trend" otherwise; "too short" with fewer than
  ``MIN_BINS`` bins that have oracle (also: no samples, or no oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "BIN_S",
    "CONFIDENCE",
    "DOWNWARD",
    "MIN_BINS",
    "NO_DOWNWARD",
    "PER_S",
    "TOLERANCE",
    "TOO_SHORT",
    "WINDOW_S",
    "Slope",
    "SteadyState",
    "Verdict",
    "captured_between",
    "captured_bins",
    "steady_state",
    "theil_sen",
    "verdict",
]

WINDOW_S = 600.0
BIN_S = 30.0
MIN_BINS = 5
CONFIDENCE = 0.95
# Slopes are given per 10 minutes.
PER_S = 600.0
# A slope smaller than this (fraction of the oracle per 10 minutes) is flat.
TOLERANCE = 0.02

Verdict = Literal["no downward trend", "downward trend", "too short"]
NO_DOWNWARD: Verdict = "no downward trend"
DOWNWARD: Verdict = "downward trend"
TOO_SHORT: Verdict = "too short"

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Slope:
    """A Theil-Sen slope with its interval (units of y per unit of x)."""

    slope: float
    low: float
    high: float
    n: int  # points


@dataclass(frozen=True)
class SteadyState:
    """Captured sharing over a run's last window and its trend."""

    window_s: float  # the window used
    start_s: float
    end_s: float
    shortened: bool  # the run was shorter than twice the window asked: its last half
    captured: float | None  # None: no oracle in the window
    slope_per_10min: float | None  # fraction of the oracle per 10 minutes
    slope_low_per_10min: float | None
    slope_high_per_10min: float | None
    bins: int  # bins with oracle that the slope was taken over
    verdict: Verdict


def verdict(slope: float | None, high: float | None, tolerance: float = TOLERANCE) -> Verdict:
    """ "no downward trend" when the interval's upper end is >= 0 or the slope
    is flatter than ``tolerance``; None (no slope): "too short"."""
    if slope is None or high is None or not (math.isfinite(slope) and math.isfinite(high)):
        return TOO_SHORT
    return NO_DOWNWARD if high >= 0 or abs(slope) < tolerance else DOWNWARD


def theil_sen(x: npt.ArrayLike, y: npt.ArrayLike, confidence: float = CONFIDENCE) -> Slope:
    """Theil-Sen slope of finite points (``x`` distinct) with Sen's interval.
    Raises ValueError with fewer than two points."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError("theil_sen: x and y must be 1-d and of one length")
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = int(xs.size)
    if n < 2:
        raise ValueError(f"theil_sen: {n} finite points, need 2")
    i, j = np.triu_indices(n, k=1)
    dx = xs[j] - xs[i]
    ok = dx != 0
    slopes = np.sort((ys[j] - ys[i])[ok] / dx[ok])
    if not slopes.size:
        raise ValueError("theil_sen: every x is the same")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    sigma = math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    total = slopes.size
    upper = min(int(np.round((total + z * sigma) / 2)), total - 1)
    lower = max(int(np.round((total - z * sigma) / 2)) - 1, 0)
    return Slope(float(np.median(slopes)), float(slopes[lower]), float(slopes[upper]), n)


def _clean(t: npt.ArrayLike, *ys: npt.ArrayLike) -> tuple[Array, ...]:
    """Samples where t and every y are finite, in time order."""
    tt = np.asarray(t, dtype=float)
    cols = [np.asarray(y, dtype=float) for y in ys]
    keep = np.isfinite(tt)
    for c in cols:
        keep &= np.isfinite(c)
    order = np.argsort(tt[keep], kind="stable")
    return (tt[keep][order], *(c[keep][order] for c in cols))


def _area_to(t: Array, y: Array, x: Array) -> Array:
    """∫ y dt from t[0] to each x (trapezoids; y linear between samples; x
    clipped to [t[0], t[-1]])."""
    cum = np.concatenate([[0.0], np.cumsum((y[1:] + y[:-1]) * np.diff(t) / 2)])
    xc = np.clip(x, t[0], t[-1])
    k = np.clip(np.searchsorted(t, xc, side="right") - 1, 0, len(t) - 1)
    yx = np.interp(xc, t, y)
    out: Array = cum[k] + (xc - t[k]) * (y[k] + yx) / 2
    return out


def _ratio_over(t: Array, sharing: Array, oracle: Array, edges: Array) -> tuple[Array, Array]:
    """Per interval between consecutive edges: ∫sharing / ∫oracle (NaN where
    the oracle's integral is not > 0), and the oracle's integral."""
    s = np.diff(_area_to(t, sharing, edges))
    o = np.diff(_area_to(t, oracle, edges))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(o > 0, s / np.where(o > 0, o, 1.0), np.nan)
    return ratio, o


def captured_between(
    t: npt.ArrayLike, sharing: npt.ArrayLike, oracle: npt.ArrayLike, start: float, end: float
) -> float | None:
    """∫ pages_sharing dt / ∫ oracle dt over [start, end]; None without oracle
    there (or with fewer than two usable samples)."""
    tt, s, o = _clean(t, sharing, oracle)
    if tt.size < 2 or not end > start:
        return None
    ratio, _ = _ratio_over(tt, s, o, np.array([start, end], dtype=float))
    return None if math.isnan(ratio[0]) else float(ratio[0])


def captured_bins(
    t: npt.ArrayLike,
    sharing: npt.ArrayLike,
    oracle: npt.ArrayLike,
    bin_s: float = BIN_S,
    start: float | None = None,
    end: float | None = None,
) -> tuple[Array, Array]:
    """Captured sharing in bins of ``bin_s`` from ``start`` (default: the
    first sample) up to ``end`` (default: the last; a last partial bin shorter
    than half a bin is left out): (bin centres, values, NaN where a bin has no
    oracle)."""
    if not bin_s > 0:
        raise ValueError(f"captured_bins: bin_s {bin_s} must be > 0")
    tt, s, o = _clean(t, sharing, oracle)
    empty = np.empty(0, dtype=float)
    if tt.size < 2:
        return empty, empty
    lo = float(tt[0]) if start is None else max(float(start), float(tt[0]))
    hi = float(tt[-1]) if end is None else min(float(end), float(tt[-1]))
    if not hi > lo:
        return empty, empty
    count = math.floor((hi - lo) / bin_s + 0.5)
    if count < 1:
        return empty, empty
    edges = lo + bin_s * np.arange(count + 1, dtype=float)
    edges[-1] = min(edges[-1], hi)
    ratio, _ = _ratio_over(tt, s, o, edges)
    centres: Array = (edges[1:] + edges[:-1]) / 2
    return centres, ratio


def steady_state(
    t: npt.ArrayLike,
    sharing: npt.ArrayLike,
    oracle: npt.ArrayLike,
    window_s: float = WINDOW_S,
    bin_s: float = BIN_S,
    tolerance: float = TOLERANCE,
) -> SteadyState:
    """Captured sharing over the last ``window_s`` of a run (its last half if
    the run is shorter than twice that) and its Theil-Sen trend per 10 min."""
    if not window_s > 0:
        raise ValueError(f"steady_state: window_s {window_s} must be > 0")
    tt, s, o = _clean(t, sharing, oracle)
    if tt.size < 2:
        return SteadyState(0.0, 0.0, 0.0, True, None, None, None, None, 0, TOO_SHORT)
    first, end = float(tt[0]), float(tt[-1])
    span = end - first
    # Samples start and end a second or so inside the run: a run of twice
    # the window whose samples span a bin less still gets the whole window.
    shortened = span < 2 * window_s - bin_s
    used = span / 2 if shortened else window_s
    start = end - used
    captured = captured_between(tt, s, o, start, end)
    centres, values = captured_bins(tt, s, o, bin_s, start, end)
    have = np.isfinite(values)
    if int(have.sum()) < MIN_BINS:
        return SteadyState(
            used, start, end, shortened, captured, None, None, None, int(have.sum()), TOO_SHORT
        )
    fit = theil_sen(centres[have], values[have])
    slope, low, high = fit.slope * PER_S, fit.low * PER_S, fit.high * PER_S
    return SteadyState(
        window_s=used,
        start_s=start,
        end_s=end,
        shortened=shortened,
        captured=captured,
        slope_per_10min=slope,
        slope_low_per_10min=low,
        slope_high_per_10min=high,
        bins=fit.n,
        verdict=verdict(slope, high, tolerance),
    )

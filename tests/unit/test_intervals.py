"""The median and its percentile-bootstrap interval."""

from __future__ import annotations

import math

import pytest

from pyksm.analysis.intervals import median_interval


def test_known_data_gives_the_exact_order_statistics() -> None:
    # Bootstrap medians of 1..11: P(median <= 2) = P(Bin(11, 2/11) >= 6) = 0.007,
    # P(median <= 3) = 0.051, so the 2.5 % point is 3 and, by symmetry, the
    # 97.5 % point 9 (far enough from 0.025 for 10 000 resamples to agree).
    iv = median_interval(range(1, 12))
    assert (iv.median, iv.low, iv.high, iv.n, iv.kind) == (6.0, 3.0, 9.0, 11, "bootstrap")
    assert iv.values == tuple(float(v) for v in range(1, 12))
    # 1..5: P(median = 1) ~ 0.058 > 0.025, so the interval is the whole range.
    five = median_interval([5, 1, 4, 2, 3])
    assert (five.median, five.low, five.high) == (3.0, 1.0, 5.0)
    same = median_interval([2.5, 2.5, 2.5, 2.5])
    assert (same.median, same.low, same.high) == (2.5, 2.5, 2.5)


def test_it_is_deterministic_and_the_seed_is_what_varies_it() -> None:
    data = [0.81, 0.86, 0.9, 0.84, 0.88, 0.79, 0.91]
    assert median_interval(data) == median_interval(list(data))
    a = median_interval(data, resamples=200, seed=1)
    b = median_interval(data, resamples=200, seed=1)
    assert a == b
    assert a.low is not None and a.high is not None
    assert min(data) <= a.low <= a.median <= a.high <= max(data)  # type: ignore[operator]


def test_one_and_two_values_degrade() -> None:
    one = median_interval([0.7])
    assert (one.median, one.low, one.high, one.n, one.kind) == (0.7, None, None, 1, "value")
    two = median_interval([0.9, 0.5])
    assert (two.median, two.low, two.high, two.n, two.kind) == (0.7, 0.5, 0.9, 2, "range")
    none = median_interval([])
    assert (none.median, none.low, none.high, none.n, none.kind) == (None, None, None, 0, "none")


def test_never_is_infinitely_late() -> None:
    iv = median_interval([10.0, 20.0, math.inf])
    assert iv.median == 20.0 and iv.high == math.inf
    assert median_interval([10.0, math.inf, math.inf]).median == math.inf
    assert median_interval([10.0, math.inf]).median == math.inf
    assert median_interval([10.0, 20.0, 30.0, math.inf]).median == 25.0
    with pytest.raises(ValueError, match="NaN"):
        median_interval([1.0, math.nan])

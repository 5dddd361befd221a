"""Steady-state metrics (pyksm.analysis.steady) on synthetic series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pyksm.analysis import steady

T = np.arange(0.0, 1201.0)  # 20 minutes, one sample a second
ORACLE = np.full(T.size, 1000.0)


def _series(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return T, fraction * ORACLE, ORACLE


def _noisy(level: float, sd: float, seed: int = 3) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, sd, T.size)


# (name, captured fraction over time, expected verdict, slope per 10 min or None to skip)
CASES = [
    ("flat", np.full(T.size, 0.85), steady.NO_DOWNWARD, 0.0),
    # from 0.9 down by 0.15 per 10 minutes: the apache decline
    ("declining", 0.9 - 0.15 * T / 600, steady.DOWNWARD, -0.15),
    ("rising", 0.5 + 0.1 * T / 600, steady.NO_DOWNWARD, 0.1),
    ("noisy flat", _noisy(0.85, 0.05), steady.NO_DOWNWARD, None),
    ("noisy declining", _noisy(0.85, 0.02) - 0.1 * T / 600, steady.DOWNWARD, None),
    # a decline flatter than the tolerance is no downward trend, however sure
    ("gently declining", 0.85 - 0.01 * T / 600, steady.NO_DOWNWARD, -0.01),
]


@pytest.mark.parametrize(("name", "fraction", "want", "slope"), CASES, ids=[c[0] for c in CASES])
def test_verdict_and_slope(
    name: str, fraction: np.ndarray, want: steady.Verdict, slope: float | None
) -> None:
    st = steady.steady_state(*_series(fraction))
    assert st.verdict == want
    assert st.window_s == 600 and not st.shortened
    assert st.start_s == 600 and st.end_s == 1200
    assert st.bins == 20
    assert st.slope_per_10min is not None and st.slope_low_per_10min is not None
    assert st.slope_high_per_10min is not None
    assert st.slope_low_per_10min <= st.slope_per_10min <= st.slope_high_per_10min
    if slope is not None:
        assert st.slope_per_10min == pytest.approx(slope, abs=1e-9)


def test_captured_is_over_the_last_window_only() -> None:
    # 0.2 for the first 10 minutes, 0.9 after: the window sees 0.9 only
    fraction = np.where(T < 600, 0.2, 0.9)
    st = steady.steady_state(*_series(fraction))
    assert st.captured == pytest.approx(0.9)


def test_captured_is_a_ratio_of_integrals_not_a_mean_of_ratios() -> None:
    # half the window the oracle is 100 and all of it is shared; the other
    # half it is 900 and none is: the integrals give 0.1, the mean ratio 0.5
    oracle = np.where(T < 900, 100.0, 900.0)
    sharing = np.where(T < 900, 100.0, 0.0)
    got = steady.captured_between(T, sharing, oracle, 600, 1200)
    assert got == pytest.approx(0.1, abs=0.01)


def test_a_short_run_uses_its_last_half() -> None:
    t = np.arange(0.0, 301.0)
    st = steady.steady_state(t, np.full(t.size, 50.0), np.full(t.size, 100.0))
    assert st.shortened and st.window_s == 150 and st.start_s == 150
    assert st.captured == pytest.approx(0.5)
    assert st.bins == 5 and st.verdict == steady.NO_DOWNWARD


def test_a_run_of_twice_the_window_sampled_inside_it_uses_the_whole_window() -> None:
    # the steady scenario's 1200 s: samples from 1 s to 1199 s (1198 s apart)
    t = np.arange(1.0, 1200.0)
    st = steady.steady_state(t, np.full(t.size, 90.0), np.full(t.size, 100.0))
    assert not st.shortened and st.window_s == 600 and st.start_s == 599
    assert st.captured == pytest.approx(0.9)
    # a bin less than that is shortened
    t = np.arange(0.0, 1169.0)
    st = steady.steady_state(t, np.full(t.size, 90.0), np.full(t.size, 100.0))
    assert st.shortened and st.window_s == 584


SHORT = [
    # (name, t, pages_sharing, oracle)
    ("too few bins", np.arange(0.0, 200.0), np.full(200, 5.0), np.full(200, 10.0)),
    ("no samples", np.empty(0), np.empty(0), np.empty(0)),
    ("one sample", np.zeros(1), np.zeros(1), np.ones(1)),
    ("no oracle", T, np.zeros(T.size), np.zeros(T.size)),
    ("oracle all NaN", T, np.zeros(T.size), np.full(T.size, np.nan)),
]


@pytest.mark.parametrize(("name", "t", "sharing", "oracle"), SHORT, ids=[c[0] for c in SHORT])
def test_too_short_or_no_oracle(
    name: str, t: np.ndarray, sharing: np.ndarray, oracle: np.ndarray
) -> None:
    st = steady.steady_state(t, sharing, oracle)
    assert st.verdict == steady.TOO_SHORT
    assert st.slope_per_10min is None and st.slope_high_per_10min is None
    if name == "too few bins":
        # a 199 s run: its last half, 99.5 s, is 3 bins of 30 s; captured still known
        assert st.shortened and st.bins == 3 and st.captured == pytest.approx(0.5)
    else:
        assert st.captured is None


def test_nan_samples_are_left_out_not_counted_as_zero() -> None:
    oracle = ORACLE.copy()
    oracle[700:760] = np.nan
    sharing = 0.8 * ORACLE
    st = steady.steady_state(T, sharing, oracle)
    assert st.captured == pytest.approx(0.8)
    assert st.verdict == steady.NO_DOWNWARD


def test_bins_without_oracle_are_left_out_of_the_trend() -> None:
    oracle = ORACLE.copy()
    oracle[600:700] = 0.0  # the first three bins of the window have none
    st = steady.steady_state(T, 0.8 * oracle, oracle)
    assert st.bins == 17
    assert st.slope_per_10min == pytest.approx(0.0, abs=1e-9)


def test_theil_sen_ignores_an_outlier_and_its_interval_covers() -> None:
    x = np.arange(20.0)
    y = 2.0 * x + 1.0
    y[5] = 500.0
    fit = steady.theil_sen(x, y)
    assert fit.slope == pytest.approx(2.0)
    assert fit.low <= 2.0 <= fit.high and fit.n == 20


def test_theil_sen_interval_matches_sens_order_statistics() -> None:
    # n = 5 points: 10 slopes; sigma = sqrt(5*4*15/18) = 4.082; z = 1.96:
    # upper = round((10 + 8.0)/2) = 9, lower = round((10 - 8.0)/2) - 1 = 0
    x = np.arange(5.0)
    y = np.array([0.0, 1.0, 4.0, 9.0, 16.0])
    fit = steady.theil_sen(x, y)
    slopes = sorted((y[j] - y[i]) / (x[j] - x[i]) for i in range(5) for j in range(i + 1, 5))
    assert (fit.low, fit.high) == (slopes[0], slopes[9])
    assert fit.slope == pytest.approx(float(np.median(slopes)))


@pytest.mark.parametrize("x", [[1.0], [], [2.0, 2.0]])
def test_theil_sen_refuses_too_few_points(x: list[float]) -> None:
    with pytest.raises(ValueError):
        steady.theil_sen(x, [0.0] * len(x))


@pytest.mark.parametrize(
    ("slope", "high", "want"),
    [
        (-0.1, -0.05, steady.DOWNWARD),
        (-0.1, 0.0, steady.NO_DOWNWARD),
        (-0.019, -0.01, steady.NO_DOWNWARD),
        (-0.021, -0.01, steady.DOWNWARD),
        (0.3, 0.5, steady.NO_DOWNWARD),
        (None, None, steady.TOO_SHORT),
        (math.nan, 0.0, steady.TOO_SHORT),
    ],
)
def test_verdict_rule(slope: float | None, high: float | None, want: steady.Verdict) -> None:
    assert steady.verdict(slope, high) == want


def test_captured_bins_cover_the_run_and_mark_bins_without_oracle() -> None:
    oracle = ORACLE.copy()
    oracle[:61] = 0.0  # none up to t = 60 s, the end of the second bin
    centres, values = steady.captured_bins(T, 0.5 * oracle, oracle, 30.0)
    assert centres.size == 40 and centres[0] == 15.0 and centres[-1] == 1185.0
    assert np.isnan(values[:2]).all()
    assert values[2:] == pytest.approx(0.5)


def test_a_window_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        steady.steady_state(T, ORACLE, ORACLE, window_s=0)

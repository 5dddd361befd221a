"""Scanner simulator on tiny memories with hand-computed answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pyksm.analysis.hinttrace import HintTrace
from pyksm.analysis.simulator import (
    ScanParams,
    SimInput,
    SimResult,
    error_against,
    observed_rate,
    simulate,
    sweep,
)
from pyksm.analysis.synthetic import LaggedReaders, lagged_readers, oracle
from pyksm.errors import PyksmError
from tests.unit.analysis_memory import BASE, series

ONE_PER_SECOND = ScanParams(pages_to_scan=1, sleep_ms=1000.0, start=0.0)


def test_linear_scan_needs_two_rounds() -> None:
    # sites A A B C. Round 1 (t=0..3) only records checksums; t=4 ends the round;
    # t=5 puts site 0 in the unstable tree; t=6 merges site 1 with it.
    inp = SimInput.from_series(series([[1, 1, 2, 3]] * 3, [0.0, 5.5, 6.5]))
    r = simulate(inp, ONE_PER_SECOND)
    assert r.pages_sharing.tolist() == [0, 0, 1]
    assert r.pages_shared.tolist() == [0, 0, 1]
    assert r.counters["volatile"] == 4


def test_hints_merge_in_the_second_batch() -> None:
    # the hint covers sites 0-1: t=0 hint step puts site 0 in the unstable tree
    # (volatility skipped), t=1 hint step merges site 1.
    inp = SimInput.from_series(
        series([[1, 1, 2, 3]] * 3, [0.0, 1.5, 2.5]),
        HintTrace.from_records([(0.0, 100, BASE, 8192)]),
    )
    p = ScanParams(pages_to_scan=2, sleep_ms=1000.0, start=0.0, hint_capacity=4)
    r = simulate(inp, p)
    assert r.pages_sharing.tolist() == [0, 1, 1]
    assert r.counters["hint_visits"] == 2
    plain = simulate(inp, ScanParams(pages_to_scan=2, sleep_ms=1000.0, start=0.0))
    assert plain.pages_sharing.tolist() == [0, 0, 0]


def test_ksmd_may_start_before_the_first_snapshot() -> None:
    # The lab starts ksmd, then takes its first snapshot: ksm_start < 0 on the
    # series clock. A scan started 1 s early is one step ahead of one at t=0.
    inp = SimInput.from_series(series([[1, 1, 2, 3]] * 3, [0.0, 4.5, 5.5]))
    early = simulate(inp, replace(ONE_PER_SECOND, start=-1.0))
    assert early.pages_sharing.tolist() == [0, 0, 1]
    assert simulate(inp, ONE_PER_SECOND).pages_sharing.tolist() == [0, 0, 0]
    with pytest.raises(PyksmError, match=r"start nan: must be a finite number$"):
        simulate(inp, replace(ONE_PER_SECOND, start=float("nan")))


def test_copy_on_write_break_is_seen_at_the_next_visit() -> None:
    # merged at t=4; site 1 changes at t=10 and is visited at t=10
    s = series([[1, 1], [1, 1], [1, 2], [1, 2]], [0.0, 4.5, 10.0, 10.5])
    r = simulate(SimInput.from_series(s), ONE_PER_SECOND)
    assert r.pages_sharing.tolist() == [0, 1, 1, 0]
    assert r.pages_shared.tolist() == [0, 1, 1, 1]


def test_max_page_sharing_chains() -> None:
    s = series([[1] * 5, [1] * 5], [0.0, 10.0])
    r = simulate(SimInput.from_series(s), ScanParams(max_page_sharing=2, start=0.0))
    assert (r.pages_shared[-1], r.pages_sharing[-1]) == (3, 2)
    r = simulate(SimInput.from_series(s), ScanParams(start=0.0))
    assert (r.pages_shared[-1], r.pages_sharing[-1]) == (1, 4)


def test_orders_and_smart_scan_agree_on_static_memory() -> None:
    ids = [i // 2 + 1 if i < 40 else i + 1000 for i in range(400)]  # 20 pairs, 360 unique
    s = series([ids, ids], [0.0, 30.0])
    inp = SimInput.from_series(s)
    base = ScanParams(pages_to_scan=50, sleep_ms=100.0)
    results = [
        simulate(inp, base),
        simulate(inp, ScanParams(pages_to_scan=50, sleep_ms=100.0, order="random", seed=3)),
        simulate(inp, ScanParams(pages_to_scan=50, sleep_ms=100.0, smart_scan=True)),
    ]
    assert [r.pages_sharing[-1] for r in results] == [20, 20, 20]
    assert results[2].counters["skipped"] > 0


def test_hint_aging_and_overflow() -> None:
    s = series([[1, 1, 2, 3]] * 2, [0.0, 3.0])
    hints = HintTrace.from_records([(0.0, 100, BASE, 4096)] * 3)
    inp = SimInput.from_series(s, hints)
    aged = simulate(
        inp, ScanParams(start=2.0, hint_capacity=8, hint_max_age_ms=500.0, sleep_ms=1000.0)
    )
    assert aged.counters["hints_dropped_age"] == 3 and aged.counters["hint_visits"] == 0
    full = simulate(inp, ScanParams(start=0.0, hint_capacity=1, sleep_ms=1000.0))
    assert full.counters["hints_dropped_overflow"] == 2


def test_sweep_and_bad_parameters() -> None:
    inp = SimInput.from_series(series([[1, 1, 2]] * 2, [0.0, 5.0]))
    out = sweep(inp, ScanParams(), {"pages_to_scan": [1, 10], "hint_capacity": [0, 4, 8]})
    assert len(out) == 6 and out[-1].params.hint_capacity == 8
    with pytest.raises(PyksmError, match="unknown simulator parameter"):
        sweep(inp, ScanParams(), {"speed": [1]})
    with pytest.raises(PyksmError, match="scan order"):
        simulate(inp, ScanParams(order="zigzag"))


def test_observed_rate_drives_the_budget() -> None:
    s = series([[1, 1, 2, 3]] * 3, [0.0, 5.5, 6.5])
    s.ksm = [{"pages_scanned": 0}, {"pages_scanned": 5}, {"pages_scanned": 6}]
    inp = SimInput.from_series(s)
    rate = observed_rate(s)
    assert rate.tolist() == pytest.approx([5 / 5.5, 1.0, 1.0])
    # one page a second as the kernel did; pages_to_scan is then ignored
    fixed = simulate(inp, ScanParams(pages_to_scan=999, sleep_ms=1000.0, start=0.0), rate=[1.0] * 3)
    assert fixed.pages_sharing.tolist() == [0, 0, 1]
    with pytest.raises(PyksmError, match="rate has"):
        simulate(inp, ONE_PER_SECOND, rate=[1.0])
    s.ksm = []
    with pytest.raises(PyksmError, match="pages_scanned"):
        observed_rate(s)


def test_error_against_kernel() -> None:
    e = error_against(np.array([0, 50, 100]), np.array([0, 100, 100]))
    assert e == {"mae_rel": pytest.approx(50 / 3 / 100), "area_rel": 0.25, "final_rel": 0.0}


def _random_input() -> SimInput:
    """40 snapshots of 3000 sites, 10 % churn, 300 hints: every stage of the scanner runs."""
    rng = np.random.default_rng(5)
    T, S = 40, 3000
    content = rng.integers(0, 400, size=(T, S)).astype(np.int32)
    content[rng.random((T, S)) < 0.1] = -1
    for t in range(1, T):
        keep = rng.random(S) < 0.9
        content[t, keep] = content[t - 1, keep]
    ht = np.sort(rng.random(300) * T)
    lo = rng.integers(0, S - 50, 300).astype(np.int64)
    hi = (lo + rng.integers(1, 50, 300)).astype(np.int64)
    return SimInput(
        np.arange(T, dtype=np.float64), content, np.arange(S, dtype=np.uint64), ht, lo, hi
    )


@pytest.mark.parametrize(
    ("params", "final", "area", "visits", "merges", "skipped"),
    [
        (ScanParams(pages_to_scan=100, sleep_ms=20), 2322, 90272, 189958, 12960, 0),
        (
            ScanParams(pages_to_scan=50, sleep_ms=20, order="random", smart_scan=True),
            1907, 82267, 96463, 11505, 6492,
        ),
        (ScanParams(pages_to_scan=100, sleep_ms=20, hint_capacity=64), 2322, 90173, 191722, 12951, 0),
        (
            ScanParams(pages_to_scan=100, sleep_ms=20, hint_capacity=16, interleave=(3, 1),
                       hint_max_age_ms=500, smart_scan=True, max_page_sharing=3),
            1657, 64668, 191622, 12813, 2238,
        ),
        (
            # (1, 0) before the kernel (and so the simulator) refused L = 0; the
            # hint supply, not the ratio, bounds this case: the same numbers.
            ScanParams(pages_to_scan=100, sleep_ms=20, hint_capacity=32, interleave=(16, 1),
                       hint_skip_volatility=False, order="random"),
            2322, 90197, 191732, 12957, 0,
        ),
    ],
)  # fmt: skip
def test_results_stay_what_the_one_function_scanner_gave(
    params: ScanParams, final: int, area: int, visits: int, merges: int, skipped: int
) -> None:
    """Pinned from the scanner before it was split into stages: the split changed nothing."""
    r = simulate(_random_input(), params)
    assert (int(r.pages_sharing[-1]), int(r.pages_sharing.sum())) == (final, area)
    assert (r.counters["visits"], r.counters["merges"], r.counters["skipped"]) == (
        visits,
        merges,
        skipped,
    )


@pytest.mark.parametrize("interleave", [(1, 0), (17, 1), (0, 0)])
def test_interleave_that_starves_the_linear_scan_is_refused(interleave: tuple[int, int]) -> None:
    """As the kernel's hint_interleave: L >= 1 and H <= 16 L."""
    with pytest.raises(PyksmError, match="L must be at least 1"):
        ScanParams(interleave=interleave).check()


def _burst_input(n: int = 4000, background: int = 20000) -> SimInput:
    """Two guests read the same ``n`` pages at t = 1 s (sites A then B, after a
    ``background`` of unique pages), hinted as 16-page records; 0.25 s snapshots."""
    times = np.arange(0.0, 10.01, 0.25)
    S = background + 2 * n
    content = np.tile(np.arange(S, dtype=np.int32), (times.size, 1))
    content[times < 1.0, background:] = -1  # not read yet
    later = times >= 1.0
    content[np.ix_(later, np.arange(background, background + n))] = S + np.arange(n)
    content[np.ix_(later, np.arange(background + n, S))] = S + np.arange(n)
    lo = np.arange(background, S, 16, dtype=np.int64)
    return SimInput(
        times, content, np.arange(S, dtype=np.uint64), np.full(lo.size, 1.0), lo, lo + 16
    )


def test_adaptive_interleave_merges_a_burst_sooner_and_keeps_the_linear_floor() -> None:
    inp = _burst_input()
    base = ScanParams(pages_to_scan=100, sleep_ms=20.0, start=0.0, hint_capacity=4096)
    fixed = simulate(inp, base)
    adaptive = simulate(inp, replace(base, adaptive_interleave=True))

    def when(r: SimResult, share: float) -> float:
        return float(r.times[np.argmax(r.pages_sharing >= share * 4000)])

    assert fixed.pages_sharing[-1] == adaptive.pages_sharing[-1] == 4000
    # 8000 hinted pages: 1:1 gives them 2500 steps a second, 16:1 4706.
    assert when(adaptive, 0.9) <= when(fixed, 0.9) - 0.75
    assert when(adaptive, 0.5) < when(fixed, 0.5)
    assert adaptive.counters["hint_visits"] == fixed.counters["hint_visits"] == 8000
    # Up to 16:1 once the burst waits, back to 1:1 once it is done.
    changes = adaptive.interleave_changes
    assert changes[0][0] == 1.5 and max(h for _, h, _ in changes) == 16
    assert changes[-1][1:] == (1, 1) and changes[-1][0] < 4.0
    # Hint steps without a hint are linear steps: over the run, the same linear progress.
    assert adaptive.counters["linear_visits"] == fixed.counters["linear_visits"]
    assert adaptive.summary()["interleave_changes"] == len(changes)


def test_adaptive_interleave_under_a_flood_keeps_the_linear_floor() -> None:
    """More hints than ksmd can visit: 16:1 for good, and the linear scan keeps
    1/17 of the budget and still ends its rounds."""
    inp = _burst_input(n=40000, background=2000)
    base = ScanParams(pages_to_scan=100, sleep_ms=20.0, start=0.0, hint_capacity=4096)
    fixed = simulate(inp, base)
    adaptive = simulate(inp, replace(base, adaptive_interleave=True))
    assert adaptive.interleave_changes == [(1.5, 16, 1)]
    c = adaptive.counters
    assert c["hint_visits"] > 1.5 * fixed.counters["hint_visits"]
    # From 1.5 s on, 1/17 of 100 pages every 20 ms are linear steps at least.
    assert c["linear_visits"] >= (10.0 - 1.5) / 0.02 * 100 / 17
    assert c["full_scans"] == fixed.counters["full_scans"] >= 2


def test_adaptive_interleave_parameters_are_checked() -> None:
    with pytest.raises(PyksmError, match="must grow"):
        ScanParams(adaptive_interleave=True, interleave_ladder=((2, 1), (1, 1))).check()
    with pytest.raises(PyksmError, match="at most 16 x L"):
        ScanParams(adaptive_interleave=True, interleave_ladder=((17, 1),)).check()
    with pytest.raises(PyksmError, match="adapt_period_ms"):
        ScanParams(adaptive_interleave=True, adapt_period_ms=0).check()


SMALL_LAG = LaggedReaders(
    pages=4000, pages_per_s=400.0, lag_s=2.0, background=2000, pages_per_hint=16,
    duration_s=40.0, snapshot_s=0.5,
)  # fmt: skip


def test_lagged_readers_are_the_shape_they_say() -> None:
    inp = lagged_readers(SMALL_LAG)
    assert inp.content.shape == (81, 2000 + 2 * 4000)
    # Guest B's page i holds guest A's content from 2 s after A read it.
    a, b = inp.content[:, 2000 + 10], inp.content[:, 6000 + 10]
    assert a[0] != b[0] and a[1] == b[-1] and b[4] != a[4] and b[5] == a[5]
    assert (inp.hint_hi - inp.hint_lo).sum() == 8000 and np.all(np.diff(inp.hint_time) >= 0)
    # A hint never comes before the snapshot that shows its pages.
    for t, lo, hi in zip(inp.hint_time, inp.hint_lo, inp.hint_hi, strict=True):
        k = np.searchsorted(inp.times, t, side="right") - 1
        assert np.all(inp.content[k, lo:hi] >= inp.content.shape[1])
    orc = oracle(SMALL_LAG, inp.times)
    assert orc[3] == 0 and orc[4] == 1 and orc[-1] == 4000 and np.all(np.diff(orc) >= 0)
    with pytest.raises(PyksmError, match="pages_per_s"):
        lagged_readers(replace(SMALL_LAG, pages_per_s=0.0))


def test_oldest_hint_first_pairs_lagging_readers_sooner() -> None:
    """More reads than hint steps: newest first visits both guests' freshest
    pages, which differ while B lags A; oldest first reaches A's copy of a page
    before B's, so B's visit merges. With budget to spare the order is moot."""
    inp = lagged_readers(SMALL_LAG)
    read_end = int(np.searchsorted(inp.times, 12.0))
    tight = ScanParams(pages_to_scan=8, sleep_ms=20.0, start=0.0, hint_capacity=4096)
    lifo, fifo = simulate(inp, tight), simulate(inp, replace(tight, hint_order="fifo"))
    assert fifo.pages_sharing[read_end] > 1.5 * lifo.pages_sharing[read_end]
    assert fifo.pages_sharing.sum() > lifo.pages_sharing.sum()
    assert lifo.counters["hint_visits"] == fifo.counters["hint_visits"]
    ample = replace(tight, pages_to_scan=100)
    a, b = simulate(inp, ample), simulate(inp, replace(ample, hint_order="fifo"))
    assert a.pages_sharing.tolist() == b.pages_sharing.tolist()
    assert a.pages_sharing[-1] == 4000
    with pytest.raises(PyksmError, match="unknown hint order 'lru'"):
        simulate(inp, replace(tight, hint_order="lru"))

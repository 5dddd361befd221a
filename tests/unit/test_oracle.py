"""Oracle figures on constructed memory with hand-counted answers."""

from __future__ import annotations

import numpy as np

from pyksm.analysis import dedup, oracle
from pyksm.analysis.hinttrace import HintTrace
from pyksm.analysis.pagehash import hash_pages
from pyksm.analysis.series import SnapshotSeries
from tests.unit.analysis_memory import BASE, merge, pages, series, snapshot


def test_group_stats_exact() -> None:
    h, zero = hash_pages(pages([1, 1, 1, 2, 2, 3, 0, 0]))
    st = dedup.group_stats(h, zero)
    assert st.as_dict() == {
        "present": 8,
        "zero_pages": 2,
        "distinct": 3,
        "dup_pages": 5,
        "opportunities": 3,
        "zero_opportunities": 1,
    }
    assert st.total_opportunities == 4


def test_opportunities_per_snapshot_and_missing_pages() -> None:
    # content 5: 2, 3, 3, 1, 2, 2 copies; content 6: two copies in snapshot 2 only
    s = series(
        [
            [5, 5, -1, 7, 0],
            [5, 5, 5, 7, 0],
            [5, 5, 5, 6, 6],
            [5, 8, 9, -1, 0],
            [5, 5, -1, 0, 0],
            [5, 5, 1, 2, 3],
        ]
    )
    rows = oracle.per_snapshot(s)
    assert [r["opportunities"] for r in rows] == [1, 2, 3, 0, 1, 1]
    assert [r["zero_pages"] for r in rows] == [1, 1, 0, 1, 2, 0]
    assert [r["present"] for r in rows] == [4, 5, 5, 4, 4, 5]


def test_lifetimes_exact() -> None:
    s = series(
        [
            [5, 5, -1, 7, 0],
            [5, 5, 5, 7, 0],
            [5, 5, 5, 6, 6],
            [5, 8, 9, -1, 0],
            [5, 5, -1, 0, 0],
            [5, 5, 1, 2, 3],
        ]
    )
    lt = oracle.lifetimes(s)
    got = sorted(zip(lt.first.tolist(), lt.last.tolist(), strict=True))
    # content 5 level 1: 0-2 and 4-5; level 2: 1-2; content 6: 2-2
    assert got == [(0, 2), (1, 2), (2, 2), (4, 5)]
    assert sorted(lt.seconds.tolist()) == [0.0, 1.0, 1.0, 2.0]
    assert lt.censored.sum() == 2
    assert oracle.histogram(lt) == {"<1s": 1, "1-30s": 3, ">30s": 0}
    assert oracle.histogram(lt, include_censored=False) == {"<1s": 1, "1-30s": 1, ">30s": 0}
    # alive episodes per snapshot equal the opportunity count of that snapshot
    alive = [int(((lt.first <= i) & (lt.last >= i)).sum()) for i in range(s.count)]
    assert alive == [1, 2, 3, 0, 1, 1]


def test_lifetime_bins_with_uneven_times() -> None:
    s = series([[4, 4], [4, 4], [4, 4], [1, 2], [3, 3], [3, 3]], [0, 20, 31.5, 40, 50, 50.5])
    lt = oracle.lifetimes(s)
    assert sorted(lt.seconds.tolist()) == [0.5, 31.5]
    assert oracle.histogram(lt) == {"<1s": 1, "1-30s": 0, ">30s": 1}
    fine = oracle.histogram(lt, oracle.FINE_BINS)
    assert fine["0.5-1s"] == 1 and fine["30-60s"] == 1 and sum(fine.values()) == 2


def test_categories_and_hinted_ranges() -> None:
    # pid 1: anon A, anon A, file B; pid 2: file A, file B, anon C
    a = snapshot([1, 1, 2], pid=1, file=[False, False, True])
    b = snapshot([1, 2, 3], pid=2, file=[True, True, False])
    s = SnapshotSeries.build([merge(a, b), merge(a, b)], [0.0, 1.0])
    # hint pid 2's first two pages at t=0.5: only snapshot 1 sees them hinted
    oracle.mark_hinted(s, HintTrace.from_records([(0.5, 2, BASE, 8192)]))
    r0, r1 = oracle.per_snapshot(s)
    assert r0["opportunities"] == 3  # A: 3 copies, B: 2 copies
    assert (r0["opp_anon"], r0["opp_file"], r0["opp_hinted"]) == (1, 2, 0)
    assert (r1["opp_anon"], r1["opp_file"], r1["opp_hinted"]) == (1, 2, 2)


def test_empty_series() -> None:
    s = SnapshotSeries.build([], np.empty(0))
    assert oracle.per_snapshot(s) == []
    assert len(oracle.lifetimes(s)) == 0

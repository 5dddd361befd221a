"""The controller's pure logic: ranges, de-dup window, rate cap, trust policy."""

from __future__ import annotations

import pytest

from pyksm.control.controller import Controller
from pyksm.control.dedup import RecentRanges
from pyksm.control.ranges import clip, coalesce, page_align
from pyksm.control.ratecap import PageBudget, hint_pages_per_second, parse_interleave
from pyksm.control.trust import TrustPolicy
from pyksm.errors import PyksmError
from pyksm.events import ReadEvent
from pyksm.kernel.wire import Hint

P = 4096
S = 1_000_000_000


def ev(tgid: int, start: int, length: int, ts: int = 0, probe: int = 2) -> ReadEvent:
    return ReadEvent(ts, tgid, probe, start, length)


def test_page_align_widens_to_page_bounds() -> None:
    assert page_align(0x1000, P) == (0x1000, 0x2000)
    assert page_align(0x1001, 1) == (0x1000, 0x2000)
    assert page_align(0x1FFF, 2) == (0x1000, 0x3000)
    with pytest.raises(ValueError):
        page_align(0x1000, 0)


def test_coalesce_merges_overlap_and_adjacency_per_tgid() -> None:
    got = coalesce(
        [
            (1, 0x3000, 0x4000),
            (1, 0x1000, 0x2000),
            (1, 0x2000, 0x3000),
            (2, 0x1000, 0x2000),
            (1, 0x8000, 0x9000),
            (1, 0x1000, 0x1800),
        ]
    )
    assert got == [(1, 0x1000, 0x4000), (1, 0x8000, 0x9000), (2, 0x1000, 0x2000)]


def test_clip_keeps_parts_inside_allowed_spans() -> None:
    spans = [(0x1000, 0x3000), (0x5000, 0x6000)]
    assert clip(0x0, 0x8000, spans) == [(0x1000, 0x3000), (0x5000, 0x6000)]
    assert clip(0x2000, 0x5800, spans) == [(0x2000, 0x3000), (0x5000, 0x5800)]
    assert clip(0x3000, 0x5000, spans) == []


def test_dedup_drops_repeats_inside_the_window_only() -> None:
    r = RecentRanges(window_ns=S)
    assert r.filter([(1, 0, P)], 0) == [(1, 0, P)]
    assert r.filter([(1, 0, P)], S // 2) == []
    assert r.filter([(1, 0, 2 * P)], S // 2) == [(1, 0, 2 * P)]  # longer: new pages
    assert r.filter([(2, 0, P)], S // 2) == [(2, 0, P)]  # other process
    assert r.filter([(1, 0, P)], 3 * S) == [(1, 0, P)]  # window passed
    assert r.dropped == 1


def test_rate_from_knobs_and_token_bucket() -> None:
    assert parse_interleave("1:1") == (1, 1)
    with pytest.raises(PyksmError):
        parse_interleave("x")
    with pytest.raises(PyksmError):
        parse_interleave("0:0")
    assert hint_pages_per_second(100, 20, "1:1") == pytest.approx(2500.0)
    assert hint_pages_per_second(100, 20, "3:1") == pytest.approx(3750.0)
    b = PageBudget(rate=100.0, burst=100.0, tokens=100.0)
    assert b.take(150, 0) == 100
    assert b.take(10, S // 10) == 10  # 0.1 s -> 10 pages
    assert b.take(500, 10 * S) == 100  # capped at burst
    assert b.dropped_pages == 50 + 400


def test_controller_aligns_clips_coalesces_and_dedups() -> None:
    ram = {7: [(0x10000, 0x20000)]}
    ctl = Controller(memory=lambda t: ram.get(t, []))
    hints = ctl.process(
        [ev(7, 0x10000, 2 * P), ev(7, 0x12000, P + 10), ev(7, 0x100, 64), ev(7, 0x1F000, 3 * P)], 0
    )
    assert hints == [Hint(7, 0x10000, 4 * P), Hint(7, 0x1F000, P)]
    assert ctl.stats.outside_bytes == 64 + 2 * P
    assert ctl.process([ev(7, 0x10000, 2 * P)], 1) == []  # repeat within the window


def test_controller_rate_cap_trims_hints() -> None:
    ctl = Controller(budget=PageBudget(rate=1.0, burst=3.0, tokens=3.0))
    hints = ctl.process([ev(1, 0, 2 * P), ev(1, 0x10000, 2 * P)], 0)
    assert hints == [Hint(1, 0, 2 * P), Hint(1, 0x10000, P)]


def test_safe_mode_allowlist_and_one_trust_group_at_a_time() -> None:
    open_policy = TrustPolicy()
    assert open_policy.allowed(123) and open_policy.admit({1, 2}, 0) == {1, 2}
    pol = TrustPolicy(
        safe=True, allow_tgids=frozenset({1, 2, 3, 9}), groups={1: "a", 2: "a", 3: "b"}
    )
    assert pol.allowed(1) and not pol.allowed(4)  # not allowlisted
    assert not pol.allowed(9)  # allowlisted but in no group
    assert pol.admit({1, 2, 3}, 0) == {1, 2}  # group a first; b refused
    assert pol.admit({3}, S // 2) == set()  # a still active: b waits
    assert pol.admit({3}, 2 * S) == {3}  # a quiet for the window: b's turn
    assert pol.admit({1}, 2 * S + 1) == set()
    ctl = Controller(policy=pol)
    ctl.process([ev(4, 0, P)], 10 * S)
    assert ctl.stats.refused_events == 1 and ctl.stats.hints == 0

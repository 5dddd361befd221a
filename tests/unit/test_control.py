"""The controller's pure logic: ranges, de-dup window, rate cap, trust policy."""

from __future__ import annotations

import pytest

from pyksm.control.controller import Controller
from pyksm.control.dedup import RecentRanges
from pyksm.control.ranges import clip, coalesce, page_align
from pyksm.control.ratecap import BacklogCap, KernelBacklog
from pyksm.control.trust import TrustPolicy
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


class FakeKernel:
    """The hint stack's counters as a test sets them; counts the reads."""

    def __init__(self, capacity: int = 100, pending: int = 0) -> None:
        self.k = KernelBacklog(capacity, pending, 0, 0)
        self.reads = 0

    def set(self, **kw: int) -> None:
        self.k = KernelBacklog(**{**self.k.__dict__, **kw})

    def read(self) -> KernelBacklog:
        self.reads += 1
        return self.k


MS = 1_000_000


@pytest.mark.parametrize(
    ("pending", "overflow", "age", "records", "forwarded", "dropped"),
    [
        # (capacity 100, headroom 6: the kernel is "full" from 94 pending)
        (0, 0, 0, 50, 50, {}),  # room
        (93, 0, 0, 50, 50, {}),  # below the limit: forward, the stack absorbs it
        (99, 0, 0, 50, 50, {}),  # full but the kernel dropped nothing: ksmd keeps up
        (96, 5, 0, 50, 4, {"overflow": 46}),  # full and overflowing: only what fits
        (96, 0, 3, 50, 4, {"age": 46}),  # full and expiring
        (100, 2, 2, 10, 0, {"overflow": 10}),  # overflow wins as the reason
        (50, 9, 9, 10, 10, {}),  # dropping, but with room: forward (newest first in LIFO)
    ],
)
def test_rate_cap_follows_the_kernels_backlog(
    pending: int, overflow: int, age: int, records: int, forwarded: int, dropped: dict[str, int]
) -> None:
    fk = FakeKernel(capacity=100)
    cap = BacklogCap(fk.read)
    assert cap.take([1], 0) == 1  # the first look: nothing to compare with
    fk.set(pending=pending, dropped_overflow=overflow, dropped_age=age)
    assert cap.take([2] * records, 200 * MS) == forwarded
    assert dict(cap.dropped) == dropped
    assert cap.dropped_pages == 2 * (records - forwarded)


def test_rate_cap_drops_until_the_stack_drains_below_the_headroom() -> None:
    fk = FakeKernel(capacity=100)
    cap = BacklogCap(fk.read)
    cap.take([1], 0)
    fk.set(pending=98, dropped_overflow=1)
    assert cap.take([1] * 10, 200 * MS) == 2 and cap.dropping == "overflow"
    # Within observe_ns the kernel is not read again: what was sent counts as pending.
    assert cap.take([1] * 10, 250 * MS) == 0 and fk.reads == 2
    fk.set(pending=95)  # ksmd consumed 5, nothing new dropped: still full, still capped
    assert cap.take([1] * 10, 400 * MS) == 5 and cap.dropping == "overflow"
    fk.set(pending=90)  # below capacity - headroom: forward everything again
    assert cap.take([1] * 10, 600 * MS) == 10 and cap.dropping is None
    assert cap.dropped == {"overflow": 8 + 10 + 5}


def test_rate_cap_drops_everything_while_hints_are_off() -> None:
    fk = FakeKernel(capacity=0)
    cap = BacklogCap(fk.read)
    assert cap.take([3, 4], 0) == 0
    assert cap.dropped == {"hints_off": 2} and cap.dropped_pages == 7
    assert cap.take([], S) == 0 and fk.reads == 1  # nothing to send: no look


def test_controller_aligns_clips_coalesces_and_dedups() -> None:
    ram = {7: [(0x10000, 0x20000)]}
    ctl = Controller(memory=lambda t: ram.get(t, []))
    hints = ctl.process(
        [ev(7, 0x10000, 2 * P), ev(7, 0x12000, P + 10), ev(7, 0x100, 64), ev(7, 0x1F000, 3 * P)], 0
    )
    assert hints == [Hint(7, 0x10000, 4 * P), Hint(7, 0x1F000, P)]
    assert ctl.stats.outside_bytes == 64 + 2 * P
    assert ctl.process([ev(7, 0x10000, 2 * P)], 1) == []  # repeat within the window


def test_controller_rate_cap_keeps_the_first_whole_ranges() -> None:
    fk = FakeKernel(capacity=16, pending=15)
    ctl = Controller(cap=BacklogCap(fk.read))
    ctl.process([ev(1, 0x40000, P)], 0)
    fk.set(dropped_overflow=1)
    hints = ctl.process([ev(1, 0, 2 * P), ev(1, 0x10000, 2 * P)], S)
    assert hints == [Hint(1, 0, 2 * P)]  # one record fits below the capacity
    assert ctl.stats.hinted_pages == 1 + 2
    assert ctl.cap is not None and ctl.cap.dropped == {"overflow": 1}
    assert ctl.cap.dropped_pages == 2


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

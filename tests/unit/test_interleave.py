"""The adaptive hint_interleave: its control law (pure), and the thin part that
writes the knob and puts it back (on a fake sysfs directory; the real
kernel interface is tested in tests/vm/test_adaptive.py)."""

from __future__ import annotations

import itertools
import os
import signal
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from pyksm.control.interleave import (
    DEFAULT_LADDER,
    MAX_RATIO,
    AdaptiveInterleave,
    Law,
    LawState,
    Observation,
    PagesPerHint,
    decide,
    parse_ladder,
    parse_ratio,
    share,
)
from pyksm.errors import PyksmError
from pyksm.events import ReadEvent
from pyksm.kernel.ksm import Ksm
from pyksm.kernel.wire import Hint

LAW = Law.from_base((1, 1))  # rungs 1:1 2:1 4:1 8:1 16:1
STEPS = 5000.0  # 100 pages every 20 ms


def obs(
    pending: int, ppp: float = 1.0, dropped: int = 0, steps: float = STEPS, dt: float = 0.5
) -> Observation:
    return Observation(pending, ppp, dropped, steps, dt)


def steady(rung: int, pending: int, ppp: float = 1.0) -> LawState:
    """A state whose last backlog equals this one's: no growth."""
    return LawState(rung=rung, backlog=pending * ppp)


@pytest.mark.parametrize(
    ("pending", "ppp", "ratio", "reason"),
    [
        (0, 1.0, (1, 1), "base"),
        (1000, 1.0, (1, 1), "hold"),  # need 0.2: 1:1 clears it within the second
        (2600, 1.0, (2, 1), "backlog"),  # need 0.52
        (3900, 1.0, (4, 1), "backlog"),  # 0.78
        (4400, 1.0, (8, 1), "backlog"),  # 0.88
        (4600, 1.0, (16, 1), "backlog"),  # 0.92
        (50000, 1.0, (16, 1), "backlog"),  # more than a second: the top rung, no higher
        (100, 32.0, (2, 1), "backlog"),  # records of 32 pages: 3200 steps
    ],
)
def test_the_backlog_in_scan_steps_picks_the_rung(
    pending: int, ppp: float, ratio: tuple[int, int], reason: str
) -> None:
    d = decide(LAW, steady(0, pending, ppp), obs(pending, ppp))
    assert (d.ratio, d.reason) == (ratio, reason)


def test_a_growing_backlog_counts_what_one_horizon_would_add() -> None:
    # 1000 pages now, 0 half a second ago: 2000 more a second -> 3000 -> need 0.6
    d = decide(LAW, LawState(), obs(1000))
    assert d.need == pytest.approx(0.6) and d.ratio == (2, 1)
    # The same backlog, shrinking: no growth, 1:1 holds it.
    assert decide(LAW, LawState(backlog=4000), obs(1000)).ratio == (1, 1)


def test_a_slower_ksmd_needs_a_larger_share() -> None:
    assert decide(LAW, steady(0, 1000), obs(1000, steps=1250)).ratio == (4, 1)  # need 0.8


def test_expiring_or_overflowing_hints_push_one_rung_up() -> None:
    d = decide(LAW, steady(0, 10), obs(10, dropped=3))
    assert (d.ratio, d.reason) == ((2, 1), "drops")
    assert decide(LAW, steady(2, 10), obs(10, dropped=1)).ratio == (8, 1)
    assert decide(LAW, steady(4, 10), obs(10, dropped=1)).ratio == (16, 1)  # the top holds
    # A backlog that needs more than one rung up gets it, drops or not.
    d = decide(LAW, steady(0, 4600), obs(4600, dropped=1))
    assert (d.ratio, d.reason) == ((16, 1), "backlog")


@pytest.mark.parametrize(
    ("rung", "pending", "ratio", "reason"),
    [
        (3, 3500, (8, 1), "hold"),  # need 0.7: 4:1 would do, but not with the margin
        (3, 1500, (4, 1), "down"),  # need 0.3: 2:1 has the margin; one rung a tick
        (2, 500, (2, 1), "down"),  # need 0.1
        (1, 500, (1, 1), "down"),
        (0, 500, (1, 1), "hold"),
    ],
)
def test_hysteresis_goes_down_one_rung_at_a_time_with_a_margin(
    rung: int, pending: int, ratio: tuple[int, int], reason: str
) -> None:
    d = decide(LAW, steady(rung, pending), obs(pending))
    assert (d.ratio, d.reason) == (ratio, reason)


def test_back_to_the_base_once_nothing_waits_for_settle_ticks() -> None:
    s = LawState(rung=4, backlog=100.0)
    d1 = decide(LAW, s, obs(0))
    assert (d1.ratio, d1.reason) == ((16, 1), "settling")
    d2 = decide(LAW, d1.state, obs(0))
    assert (d2.ratio, d2.reason) == ((1, 1), "base")
    # A hint between two empty ticks starts the count again.
    d = decide(LAW, decide(LAW, d1.state, obs(1)).state, obs(0))
    assert d.reason == "settling"
    # Nothing pending but hints expired since the last tick: not calm.
    assert decide(LAW, LawState(rung=1), obs(0, dropped=2)).ratio == (4, 1)


def test_a_burst_raises_the_ratio_and_its_end_restores_the_base() -> None:
    state, seen = LawState(), []
    for pending in (0, 2000, 6000, 8000, 4000, 1500, 300, 0, 0, 0):
        d = decide(LAW, state, obs(pending))
        state = d.state
        seen.append(f"{d.ratio[0]}:{d.ratio[1]}")
    # up at once (2000 pages, growing 4000/s); down a rung a tick once 2:1 has a
    # margin (1500); two empty ticks, then the base.
    assert seen == ["1:1", "16:1", "16:1", "16:1", "16:1", "8:1", "4:1", "4:1", "1:1", "1:1"]


@pytest.mark.parametrize(
    "ladder", [DEFAULT_LADDER, ((1, 2), (1, 1), (3, 1), (16, 1)), ((1, 1000), (999, 1000))]
)
@pytest.mark.parametrize("pending", [0, 1, 10**3, 10**6, 10**9])
@pytest.mark.parametrize("dropped", [0, 5])
def test_every_decision_is_a_ratio_the_kernel_accepts(
    ladder: tuple[tuple[int, int], ...], pending: int, dropped: int
) -> None:
    for base in ((0, 1), (1, 1), (1, 4), (16, 1)):
        law = Law.from_base(base, ladder)
        for rung in range(len(law.rungs)):
            h, low = decide(law, LawState(rung=rung), obs(pending, dropped=dropped)).ratio
            assert low >= 1 and h <= MAX_RATIO * low  # the linear scan keeps >= 1/17
            assert h <= 1000 and low <= 1000


def test_rungs_start_at_the_base_and_only_grow() -> None:
    assert Law.from_base((1, 1)).rungs == DEFAULT_LADDER
    assert Law.from_base((3, 1)).rungs == ((3, 1), (4, 1), (8, 1), (16, 1))
    assert Law.from_base((0, 1)).rungs == ((0, 1), *DEFAULT_LADDER)
    assert Law.from_base((16, 1)).rungs == ((16, 1),)  # nothing above: the law holds it
    assert decide(Law.from_base((16, 1)), LawState(), obs(10**6)).ratio == (16, 1)
    rungs = Law.from_base((1, 3), DEFAULT_LADDER).rungs
    assert all(share(a) < share(b) for a, b in itertools.pairwise(rungs))


def test_ladders_and_ratios_parse_as_the_kernel_bounds_them() -> None:
    assert parse_ladder("1:1,2:1,4:1") == ((1, 1), (2, 1), (4, 1))
    assert parse_ladder(" 1:2 , 1:1 ") == ((1, 2), (1, 1))
    assert parse_ratio("0:1\n") == (0, 1)
    assert parse_ratio("17:1", kernel_bounds=False) == (17, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (",", "empty"),
        ("x", "not H:L"),
        ("1:1,2", "not H:L"),
        ("1:0", "L must be at least 1"),
        ("17:1", "at most 16 x L"),
        ("2000:1000", "at most 1000"),
        ("-1:1", "not H:L"),
        ("2:1,1:1", "must grow"),
        ("1:1,2:2", "must grow"),
    ],
)
def test_bad_ladders_are_named(text: str, message: str) -> None:
    with pytest.raises(PyksmError, match=message):
        parse_ladder(text)


def test_pages_per_hint_follows_what_was_sent_lately() -> None:
    p = PagesPerHint()
    assert p.update(0, 0) == 1.0
    assert p.update(10, 320) == 32.0
    assert p.update(10, 320) == 32.0  # nothing sent: the last estimate
    assert p.update(20, 330) == 1.0


# ---- the thin part, on a fake /sys/kernel/mm/ksm


def fake_sysfs(root: Path, pending: int = 0, interleave: str = "1:1") -> Ksm:
    values = {
        "hint_interleave": f"{interleave}\n",
        "hint_capacity": "4096\n",
        "hints_pending": f"{pending}\n",
        "hints_dropped_age": "0\n",
        "hints_dropped_overflow": "0\n",
        "pages_to_scan": "100\n",
        "sleep_millisecs": "20\n",
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, text in values.items():
        (root / name).write_text(text)
    return Ksm(root)


def knob(k: Ksm) -> str:
    return (k.root / "hint_interleave").read_text().strip()


def test_the_knob_follows_the_backlog_and_goes_back_on_exit(tmp_path: Path) -> None:
    k = fake_sysfs(tmp_path, pending=0, interleave="1:2")
    a = AdaptiveInterleave(k, period_s=0.5)
    with a:
        t = a._last_tick or 0.0
        assert a.tick(t + 0.1, 0, 0) is None  # not a period yet
        (k.root / "hints_pending").write_text("5000\n")
        d = a.tick(t + 0.6, 5000, 5000)
        assert d is not None and d.ratio == (16, 1) and knob(k) == "16:1"
        (k.root / "hints_pending").write_text("0\n")
        a.tick(t + 1.2, 5000, 5000)
        assert knob(k) == "16:1"  # settling
        a.tick(t + 1.8, 5000, 5000)
        assert knob(k) == "1:2"  # the base, as found
        (k.root / "hints_pending").write_text("3000\n")
        a.tick(t + 2.4, 5000, 5000)
        assert knob(k) == "16:1"
    assert knob(k) == "1:2"
    assert a.changes == 3 and a.ticks_by_ratio == {"16:1": 3, "1:2": 1}


def test_a_ksmd_slower_than_set_is_measured(tmp_path: Path) -> None:
    """pages_scanned says ksmd ran 500 steps a second, not the 5000 it was set to:
    1000 pages pending (and as many more a second) need four times its budget."""
    k = fake_sysfs(tmp_path, pending=1000)
    (k.root / "pages_scanned").write_text("0\n")
    with AdaptiveInterleave(k) as a:
        t = a._last_tick or 0.0
        (k.root / "pages_scanned").write_text("500\n")
        d = a.tick(t + 1.0, 1000, 1000)
        assert d is not None and d.ratio == (16, 1)
        assert d.need == pytest.approx(4.0, rel=0.01)
        # ksmd did not run at all in the next tick: the set rate (the ratio is moot).
        d = a.tick(t + 2.0, 1000, 1000)
        assert d is not None and d.need == pytest.approx(0.2, rel=0.01)


def test_an_error_restores_the_knob_as_found(tmp_path: Path) -> None:
    k = fake_sysfs(tmp_path, pending=9000, interleave="1:1")
    with pytest.raises(RuntimeError, match="provoked"), AdaptiveInterleave(k) as a:
        a.tick((a._last_tick or 0.0) + 1.0, 10, 10)
        assert knob(k) == "16:1"
        raise RuntimeError("provoked")
    assert knob(k) == "1:1"


def test_an_unchanged_knob_is_not_written(tmp_path: Path) -> None:
    k = fake_sysfs(tmp_path, pending=0)
    (k.root / "hint_interleave").chmod(0o444)
    with AdaptiveInterleave(k) as a:
        a.tick((a._last_tick or 0.0) + 1.0, 0, 0)
    assert a.changes == 0 and knob(k) == "1:1"


# ---- the collector's loop: SIGINT and errors leave the knob as found


class FakeProbes:
    """ReadProbes' surface: one read event a drain (those ``reads`` says yes to);
    ``then`` runs at drain ``at``."""

    headers, layer, syscalls, functions, attached = "/h", "syscalls", ("pread64",), (), ["x"]

    def __init__(
        self, at: int, then: Any, reads: Any = lambda _n: True, on_wait: Any = lambda _t: None
    ) -> None:
        self.features = type("F", (), {"describe": staticmethod(lambda: "fake")})()
        self.drains, self.at, self.then, self.reads = 0, at, then, reads
        self.on_wait = on_wait  # called with each wait()'s timeout

    def set_targets(self, _t: object) -> None:
        pass

    def drain(self) -> list[ReadEvent]:
        self.drains += 1
        if self.drains == self.at:
            self.then()
        if not self.reads(self.drains):
            return []
        return [ReadEvent(0, os.getpid(), 2, 0x100000 * self.drains, 64 * 4096)]

    def wait(self, timeout_s: float) -> None:
        """ReadProbes.wait: the fake has no ring to poll; it tells ``on_wait``."""
        self.on_wait(timeout_s)

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class FakeSink:
    name = "fake"

    def __init__(self) -> None:
        self.sent = self.writes = 0
        self.rejected: Counter[str] = Counter()

    def send(self, hints: Sequence[Hint]) -> int:
        self.sent += len(hints)
        self.writes += 1
        return len(hints)

    def close(self) -> None:
        pass


def _run_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, at: int, then: Any
) -> tuple[Ksm, Any]:
    from pyksm.collect import session
    from pyksm.collect.targets import TargetSpec
    from pyksm.control.ratecap import BacklogCap, read_backlog

    k = fake_sysfs(tmp_path / "ksm", pending=4000)
    monkeypatch.setattr(session, "Ksm", lambda: k)
    monkeypatch.setattr(
        session, "_live_writer", lambda _i: (FakeSink(), BacklogCap(lambda: read_backlog(k)))
    )
    monkeypatch.setattr(session, "ReadProbes", lambda _o: FakeProbes(at, then))
    opts = session.CollectOptions(
        targets=TargetSpec(pids=(os.getpid(),)),
        adaptive_interleave=True,
        filter_memory=False,
        drain_s=0.02,
        duration=30.0,
    )
    return k, lambda: session.run(opts, lambda _s: None)


def test_the_collector_restores_the_knob_on_sigint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k, run = _run_collector(
        tmp_path, monkeypatch, at=40, then=lambda: os.kill(os.getpid(), signal.SIGINT)
    )
    stats = run()
    assert stats.interrupted
    assert knob(k) == "1:1"
    assert stats.interleave_base == "1:1" and stats.interleave_now == "1:1"
    assert stats.interleave_changes >= 1 and "1:1" not in stats.interleave_ticks
    assert stats.hints_sent > 0 and stats.rate_dropped == {}


def test_the_collector_restores_the_knob_on_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail() -> None:
        assert knob(k) != "1:1", "the law never raised the knob"
        raise PyksmError("provoked")

    k, run = _run_collector(tmp_path, monkeypatch, at=40, then=fail)
    with pytest.raises(PyksmError, match="provoked"):
        run()
    assert knob(k) == "1:1"


def test_adaptive_interleave_needs_live_mode(tmp_path: Path) -> None:
    from pyksm.collect import session
    from pyksm.collect.targets import TargetSpec

    opts = session.CollectOptions(
        targets=TargetSpec(pids=(os.getpid(),)), record=tmp_path / "t", adaptive_interleave=True
    )
    with pytest.raises(PyksmError, match="needs live mode"):
        session.run(opts, lambda _s: None)
    assert not (tmp_path / "t").exists()

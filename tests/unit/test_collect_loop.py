"""The collector's loop: how long it waits between drains."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyksm.collect import session
from pyksm.collect.targets import TargetSpec
from pyksm.control.ratecap import BacklogCap, read_backlog
from tests.unit.test_interleave import FakeProbes, FakeSink, fake_sysfs


def _waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reads: set[int], adaptive: bool
) -> list[tuple[str, float]]:
    """The waits of a live collector over 16 drains; drains in ``reads`` find a read.
    ("sleep", s): time.sleep after a busy drain; ("poll", s): ReadProbes.wait
    after an empty one (the first read would end it)."""
    k = fake_sysfs(tmp_path / "ksm")
    monkeypatch.setattr(session, "Ksm", lambda: k)
    monkeypatch.setattr(
        session, "_live_writer", lambda _i: (FakeSink(), BacklogCap(lambda: read_backlog(k)))
    )

    def stop() -> None:
        raise KeyboardInterrupt

    waits: list[tuple[str, float]] = []
    probes = FakeProbes(17, stop, reads.__contains__, lambda t: waits.append(("poll", t)))
    monkeypatch.setattr(session, "ReadProbes", lambda _o: probes)
    monkeypatch.setattr(session.time, "sleep", lambda t: waits.append(("sleep", t)))
    opts = session.CollectOptions(
        targets=TargetSpec(pids=(os.getpid(),)), filter_memory=False, adaptive_interleave=adaptive
    )
    stats = session.run(opts, lambda _s: None)
    assert stats.interrupted and stats.hints_sent == len(reads)
    return waits


def test_drains_back_off_while_no_reads_arrive_and_return_at_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = _waits(tmp_path, monkeypatch, {1, 2, 3, 11}, adaptive=False)
    assert [t for _, t in waits] == (
        [0.05] * 3 + [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4] + [0.05, 0.1, 0.2] + [0.4] * 3
    )
    # Busy drains sleep (reads gather); idle ones poll, so a read ends the wait.
    assert [kind for kind, _ in waits] == (["sleep"] * 3 + ["poll"] * 7 + ["sleep"] + ["poll"] * 5)


def test_with_the_adaptive_interleave_drains_keep_up_with_its_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = _waits(tmp_path, monkeypatch, {1}, adaptive=True)
    assert max(t for _, t in waits) == 0.25
    assert waits[:4] == [("sleep", 0.05), ("poll", 0.1), ("poll", 0.2), ("poll", 0.25)]

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
) -> list[float]:
    """The sleeps of a live collector over 16 drains; drains in ``reads`` find a read."""
    k = fake_sysfs(tmp_path / "ksm")
    monkeypatch.setattr(session, "Ksm", lambda: k)
    monkeypatch.setattr(
        session, "_live_writer", lambda _i: (FakeSink(), BacklogCap(lambda: read_backlog(k)))
    )

    def stop() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(session, "ReadProbes", lambda _o: FakeProbes(17, stop, reads.__contains__))
    waits: list[float] = []
    monkeypatch.setattr(session.time, "sleep", waits.append)
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
    assert waits == [0.05] * 3 + [0.1, 0.2, 0.4, 0.4, 0.4, 0.4, 0.4] + [0.05, 0.1, 0.2] + [0.4] * 3


def test_with_the_adaptive_interleave_drains_keep_up_with_its_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits = _waits(tmp_path, monkeypatch, {1}, adaptive=True)
    assert max(waits) == 0.25 and waits[:4] == [0.05, 0.1, 0.2, 0.25]

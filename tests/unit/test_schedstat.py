"""ksmd's exact CPU time: /proc/PID/schedstat, parsed and read."""

from __future__ import annotations

import os

import pytest

from pyksm.errors import PyksmError
from pyksm.kernel import ksm


@pytest.mark.parametrize(
    ("text", "ns"),
    [("123456789 5000 17\n", 123456789), ("0 0 0", 0)],
)
def test_parse_schedstat(text: str, ns: int) -> None:
    assert ksm.parse_schedstat(text) == ns


@pytest.mark.parametrize("text", ["", "12 34", "12 x 5", "-1 0 0", "1 2 3 4"])
def test_parse_schedstat_rejects(text: str) -> None:
    with pytest.raises(PyksmError, match="schedstat"):
        ksm.parse_schedstat(text)


def test_runtime_of_this_process_grows() -> None:
    before = ksm.runtime_ns(os.getpid())
    if before is None:
        pytest.skip("no /proc/self/schedstat (CONFIG_SCHED_INFO off)")
    # The scheduler folds a running task's time in at ticks and switches,
    # so burn CPU until it has (at most ~1 s of work).
    after = before
    for _ in range(100):
        sum(range(200_000))
        after = ksm.runtime_ns(os.getpid())
        if after is None or after > before:
            break
    assert after is not None and after > before


def test_runtime_of_a_gone_task_is_none() -> None:
    assert ksm.runtime_ns(2**22 + 12345) is None

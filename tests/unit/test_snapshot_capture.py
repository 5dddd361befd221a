"""Capture on this machine: a child process with known MADV_MERGEABLE content."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pyksm.analysis import oracle, snapshot, storage
from pyksm.analysis.series import Flag
from pyksm.errors import PyksmError

CHILD = """
import mmap, sys, numpy as np
m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_MERGEABLE)
a = np.frombuffer(m, dtype=np.uint64).reshape(64, 512)
a[:40, 0] = np.arange(40, dtype=np.uint64) % 10 + 1   # 10 contents x 4 copies
a[40:48, 0] = 0                                         # 8 touched zero pages
a[48:56, 0] = np.arange(100, 108, dtype=np.uint64)      # 8 unique pages
m2 = mmap.mmap(-1, 4 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m2[:] = b"x" * len(m2)                                  # not mergeable: not captured
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    yield p
    p.kill()
    p.wait()


def test_capture_known_content(child: subprocess.Popen[str], tmp_path: Path) -> None:
    regions = snapshot.regions(child.pid)
    assert len(regions) == 1 and regions[0].end - regions[0].start == 64 * 4096
    series = snapshot.capture([child.pid], interval=0.05, count=2)
    # 56 pages written (8 untouched pages are not present)
    assert series.count == 2 and series.pages == 2 * 56
    row = oracle.per_snapshot(series)[0]
    assert row["present"] == 56 and row["zero_pages"] == 8
    assert row["distinct"] == 18 and row["opportunities"] == 30
    f = series.flags[series.span(0)]
    assert np.all(f & Flag.ANON) and not np.any(f & Flag.FILE)
    back = storage.load(storage.save(series, tmp_path / "c.npz"))
    assert np.array_equal(back.hash, series.hash) and back.meta["pids"] == [child.pid]


def test_missing_process_and_bad_selection() -> None:
    with pytest.raises(PyksmError, match="no process"):
        snapshot.regions(2**22 + 5)
    with pytest.raises(PyksmError, match="region selection"):
        snapshot.regions(1, "everything")

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


FORKED = """
import mmap, os, sys
m = mmap.mmap(-1, 16 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_MERGEABLE)
for i in range(16):
    m[i * 4096] = i + 1
if os.fork() == 0:                      # shares all 16 frames copy-on-write
    sys.stdin.read()
    os._exit(0)
print("ready", flush=True)
sys.stdin.read()
"""


def test_frames_shared_before_the_read_are_steady() -> None:
    """Frames mapped twice (COW after fork) are write-protected before the read:
    /proc/kpagecount says so, and none of their pages is flagged UNSTABLE."""
    p = subprocess.Popen(
        [sys.executable, "-c", FORKED], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        assert len(kids) == 1
        snap = snapshot.snapshot_once([p.pid, int(kids[0])])
        if not snap["pfn"].any():
            pytest.skip("no PFNs in pagemap (not root)")
        assert snap["pfn"].size == 32 and np.unique(snap["pfn"]).size == 16
        assert not np.any(snap["flags"] & Flag.UNSTABLE)
    finally:
        p.kill()
        p.wait()


def _unreadable_snapshot(pfn: list[int], flags: list[int]) -> dict[str, np.ndarray]:
    """A snapshot of a pid that no longer exists: _settle keeps its PFNs as read."""
    n = len(pfn)
    return {
        "pid": np.full(n, 2**22 + 5, dtype=np.int32),
        "vaddr": np.arange(n, dtype=np.uint64) * np.uint64(4096),
        "hash": np.zeros(n, dtype=np.uint64),
        "flags": np.array(flags, dtype=np.uint8),
        "pfn": np.array(pfn, dtype=np.uint64),
    }


def test_a_frame_that_became_shared_after_its_read_is_unstable() -> None:
    """A page written in place and then made the KSM page by ksmd keeps its PFN:
    only kpagecount before the read tells that its content may predate the merge."""
    anon, zero_pfn = int(Flag.PRESENT | Flag.ANON), int(Flag.PRESENT | Flag.ZERO_PFN)
    snap = _unreadable_snapshot(
        # 7: read unshared, shared at the end | 8: shared before both reads
        # 9: unshared, alone | 10: the zero page, never written
        [7, 7, 8, 8, 9, 10, 10],
        [anon, anon, anon, anon, anon, zero_pfn, zero_pfn],
    )
    before = np.array([False, True, True, True, False, False, False])
    snapshot._settle(snap, before)
    unstable = (snap["flags"] & Flag.UNSTABLE) != 0
    assert unstable.tolist() == [True, False, False, False, False, False, False]

"""Simulator inputs of a known shape, for what-if questions about the scanner.

:func:`lagged_readers` is the shape of the ``kernel-build`` scenario: two
guests read the same pages in the same order, one ``lag_s`` behind the
other, at ``pages_per_s`` each; every read is hinted as it lands. With more
reads than hint steps the hints queue up, and which queued hint ksmd takes
decides whether the two copies of a page meet: newest first (the kernel's
LIFO) visits both guests' freshest pages, which are different pages while
one guest lags; oldest first (FIFO) reaches a page's first copy before its
second. ``pyksm.analysis.simulator`` runs either (``hint_order``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pyksm.analysis.simulator import SimInput
from pyksm.errors import PyksmError

__all__ = ["LaggedReaders", "lagged_readers", "oracle"]


@dataclass(frozen=True)
class LaggedReaders:
    pages: int = 49152  # pages each guest reads (kernel-build: 192 MiB)
    pages_per_s: float = 1024.0  # each guest's read rate (4 MiB/s)
    lag_s: float = 3.0  # the second guest starts this much later
    background: int = 262144 - 2 * 49152  # unique pages besides (the rest of 2 x 512 MiB)
    pages_per_hint: int = 140  # pages per read, hence per hint
    duration_s: float = 180.0
    snapshot_s: float = 1.0  # content is sampled (and sharing recorded) this often

    def check(self) -> None:
        if min(self.pages, self.pages_per_hint) < 1 or self.background < 0:
            raise PyksmError("pages and pages_per_hint must be >= 1, background >= 0")
        if self.pages_per_s <= 0 or self.lag_s < 0 or self.snapshot_s <= 0:
            raise PyksmError("pages_per_s and snapshot_s must be > 0, lag_s >= 0")
        if self.duration_s < self.snapshot_s:
            raise PyksmError("duration_s must be at least one snapshot_s")


def _read_times(shape: LaggedReaders) -> tuple[npt.NDArray[np.float64], ...]:
    i = np.arange(shape.pages, dtype=np.float64)
    first = i / shape.pages_per_s
    return first, first + shape.lag_s


def lagged_readers(shape: LaggedReaders) -> SimInput:
    """Sites: the unique background, then guest A's pages, then guest B's.

    A page holds a unique content until its guest reads it, then the content
    of file page i (the same in both guests). One hint per ``pages_per_hint``
    pages read, sent when the read's last page landed (at the first snapshot
    that shows it).
    """
    shape.check()
    n, bg = shape.pages, shape.background
    S = bg + 2 * n
    times = np.arange(0.0, shape.duration_s + shape.snapshot_s / 2, shape.snapshot_s)
    content = np.tile(np.arange(S, dtype=np.int32), (times.size, 1))
    file_ids = (S + np.arange(n)).astype(np.int32)
    hint_t: list[npt.NDArray[np.float64]] = []
    hint_lo: list[npt.NDArray[np.int64]] = []
    hint_len: list[npt.NDArray[np.int64]] = []
    for g, read_at in enumerate(_read_times(shape)):
        base = bg + g * n
        # snapshot k holds the pages read by times[k]
        read = read_at[None, :] <= times[:, None]
        block = content[:, base : base + n]
        content[:, base : base + n] = np.where(read, file_ids[None, :], block)
        starts = np.arange(0, n, shape.pages_per_hint, dtype=np.int64)
        ends = np.minimum(starts + shape.pages_per_hint, n)
        # The simulator sees a page's new content from the first snapshot at
        # or after its read, so a hint is sent then: never before its data.
        landed = np.ceil(read_at[ends - 1] / shape.snapshot_s - 1e-9) * shape.snapshot_s
        hint_t.append(landed)
        hint_lo.append(base + starts)
        hint_len.append(ends - starts)
    t = np.concatenate(hint_t)
    lo = np.concatenate(hint_lo)
    sizes = np.concatenate(hint_len)
    order = np.argsort(t, kind="stable")
    return SimInput(
        times=times,
        content=content,
        sites=np.arange(S, dtype=np.uint64),
        hint_time=t[order],
        hint_lo=lo[order],
        hint_hi=(lo + sizes)[order],
    )


def oracle(shape: LaggedReaders, times: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Pages that could be shared at each time: file pages both guests hold."""
    first, second = _read_times(shape)
    both = np.maximum(first, second)
    return np.searchsorted(np.sort(both), times, side="right").astype(np.int64)

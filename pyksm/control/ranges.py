"""Page-aligned address ranges: align, coalesce, clip.

A range is ``(tgid, start, end)`` with ``end`` exclusive. Hints are page
granular in the kernel (it widens them too), so pyksm aligns outward: a page
that received any read byte is hinted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["PAGE", "Range", "clip", "coalesce", "page_align"]

PAGE = 4096
Range = tuple[int, int, int]  # tgid, start, end (exclusive)


def page_align(start: int, length: int, page: int = PAGE) -> tuple[int, int]:
    """``[start, start+length)`` widened to page bounds; ``(start, end)``."""
    if length <= 0:
        raise ValueError(f"empty range at {start:#x}")
    lo = start - start % page
    end = start + length
    hi = end + (-end) % page
    return lo, hi


def coalesce(ranges: Iterable[Range]) -> list[Range]:
    """Merge overlapping and adjacent ranges of the same tgid; sorted output."""
    out: list[Range] = []
    for tgid, start, end in sorted(ranges):
        if out and out[-1][0] == tgid and start <= out[-1][2]:
            last = out[-1]
            if end > last[2]:
                out[-1] = (tgid, last[1], end)
        else:
            out.append((tgid, start, end))
    return out


def clip(start: int, end: int, allowed: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` inside the sorted, disjoint ``allowed`` spans."""
    parts = []
    for lo, hi in allowed:
        if hi <= start:
            continue
        if lo >= end:
            break
        parts.append((max(lo, start), min(hi, end)))
    return parts

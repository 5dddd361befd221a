"""Drop hints that repeat a recent one.

Guests re-read hot blocks (metadata, the same file twice); hinting a range
that ksmd has been told about a moment ago only costs buffer slots.
``RecentRanges`` remembers each hinted ``(tgid, start, end)`` for ``window_ns``
and drops a range already covered by one remembered with the same start.
"""

from __future__ import annotations

from collections import OrderedDict

from pyksm.control.ranges import Range

__all__ = ["RecentRanges"]


class RecentRanges:
    def __init__(self, window_ns: int, max_entries: int = 65536) -> None:
        self.window_ns = window_ns
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()
        self.dropped = 0

    def _expire(self, now_ns: int) -> None:
        while self._seen:
            key, (_, when) = next(iter(self._seen.items()))
            if now_ns - when < self.window_ns and len(self._seen) <= self.max_entries:
                break
            del self._seen[key]

    def filter(self, ranges: list[Range], now_ns: int) -> list[Range]:
        """The ranges not hinted within the window; remembers the ones kept."""
        self._expire(now_ns)
        kept = []
        for tgid, start, end in ranges:
            key = (tgid, start)
            prev = self._seen.get(key)
            if prev is not None and prev[0] >= end and now_ns - prev[1] < self.window_ns:
                self.dropped += 1
                continue
            self._seen.pop(key, None)
            self._seen[key] = (end, now_ns)
            kept.append((tgid, start, end))
        return kept

    def forget(self, tgid: int) -> None:
        for key in [k for k in self._seen if k[0] == tgid]:
            del self._seen[key]

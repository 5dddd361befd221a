"""From read events to hint records: the controller's one pass per drain.

    events --(trust policy)--> page-aligned ranges --(clip to target memory)-->
    coalesce --(drop repeats within the window)--> rate cap (the kernel's backlog) --> wire.Hint

Everything here is pure (time is passed in), so tests drive it directly;
``pyksm.collect.session`` feeds it from the probes and sends its output to
``pyksm.kernel.hints.HintWriter``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from pyksm.control.dedup import RecentRanges
from pyksm.control.ranges import PAGE, Range, clip, coalesce, page_align
from pyksm.control.ratecap import BacklogCap
from pyksm.control.trust import TrustPolicy
from pyksm.events import ReadEvent
from pyksm.kernel.wire import Hint

__all__ = ["Controller", "ControllerStats"]

# tgid -> sorted disjoint (start, end) spans that may be hinted; None: no filter.
MemoryMap = Callable[[int], Sequence[tuple[int, int]] | None]


@dataclass
class ControllerStats:
    events: int = 0
    bytes_read: int = 0
    outside_bytes: int = 0  # read bytes outside the target's hintable memory
    refused_events: int = 0  # trust policy said no
    hints: int = 0
    hinted_pages: int = 0
    by_probe: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "bytes_read": self.bytes_read,
            "outside_bytes": self.outside_bytes,
            "refused_events": self.refused_events,
            "hints": self.hints,
            "hinted_pages": self.hinted_pages,
        }


class Controller:
    def __init__(
        self,
        memory: MemoryMap | None = None,
        policy: TrustPolicy | None = None,
        cap: BacklogCap | None = None,
        dedup_window_ns: int = 500_000_000,
        page: int = PAGE,
    ) -> None:
        self.memory = memory
        self.policy = policy or TrustPolicy()
        self.cap = cap
        self.recent = RecentRanges(dedup_window_ns)
        self.page = page
        self.stats = ControllerStats()

    def process(self, events: Iterable[ReadEvent], now_ns: int) -> list[Hint]:
        evs = list(events)
        admitted = self.policy.admit({e.tgid for e in evs if self.policy.allowed(e.tgid)}, now_ns)
        ranges: list[Range] = []
        spans_of: dict[int, Sequence[tuple[int, int]] | None] = {}  # looked up once a drain
        for e in evs:
            self.stats.events += 1
            self.stats.bytes_read += e.length
            self.stats.by_probe[e.probe] += 1
            if e.tgid not in admitted:
                self.stats.refused_events += 1
                continue
            if e.tgid in spans_of:
                spans = spans_of[e.tgid]
            else:
                spans = spans_of[e.tgid] = self.memory(e.tgid) if self.memory else None
            if spans is None:
                parts = [(e.start, e.start + e.length)]
            else:
                parts = clip(e.start, e.start + e.length, spans)
                self.stats.outside_bytes += e.length - sum(hi - lo for lo, hi in parts)
            for lo, hi in parts:
                a, b = page_align(lo, hi - lo, self.page)
                ranges.append((e.tgid, a, b))
        merged = self.recent.filter(coalesce(ranges), now_ns)
        return self._cap(merged, now_ns)

    def _cap(self, ranges: list[Range], now_ns: int) -> list[Hint]:
        pages = [(end - start) // self.page for _, start, end in ranges]
        # Newest reads matter most, but within one drain order is lost; keep
        # the first ranges (lowest addresses per tgid) the cap admits.
        n = self.cap.take(pages, now_ns) if self.cap is not None else len(ranges)
        hints = [Hint(tgid, start, end - start) for tgid, start, end in ranges[:n]]
        self.stats.hints += len(hints)
        self.stats.hinted_pages += sum(pages[:n])
        return hints

    def forget(self, tgid: int) -> None:
        self.recent.forget(tgid)

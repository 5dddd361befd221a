"""The controller's rate cap: forward hints while the kernel has room for them.

The kernel bounds its own backlog: the hint stack holds ``hint_capacity``
records (a record pushed into a full stack overwrites the oldest,
``hints_dropped_overflow``), and records older than ``hint_max_age_ms``
expire unvisited (``hints_dropped_age``). An estimate of what ksmd can
consume (pages_to_scan and hint_interleave) is no good bound on top of
that: ksmd's real rate differs from it, and the hint stack absorbs bursts
(a fixed cap dropped 5 % of two QEMU guests' 48 MiB disk reads, which then
waited for the next linear round).

So the cap follows the kernel's backlog (``hints_pending``):

- every hint is forwarded until the stack is within ``headroom`` of full
  (``hints_pending`` >= ``capacity - headroom``) *and* the kernel dropped
  hints since the last look (overflow or age): then the kernel is dropping
  hints anyway;
- from then on, until ``hints_pending`` falls below ``capacity - headroom``
  again, the cap forwards only what fits below ``capacity`` (what ksmd
  consumed since the last look) and drops the rest, counted by the kernel's
  reason (``overflow`` or ``age``): the controller's drops replace the
  kernel's, they do not add to them;
- with ``hint_capacity`` = 0 (hints off) every hint is dropped as
  ``hints_off`` (the kernel would refuse each with ENOSPC).

The kernel is looked at every ``observe_ns`` at most, and only when there is
something to send; in between, the records forwarded since count as pending.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyksm.kernel.ksm import Ksm

__all__ = ["REASONS", "BacklogCap", "KernelBacklog", "read_backlog"]

REASONS = ("hints_off", "overflow", "age")


@dataclass(frozen=True)
class KernelBacklog:
    """What the kernel says about its hint stack (the two drop counts are totals)."""

    capacity: int
    pending: int
    dropped_overflow: int
    dropped_age: int


def read_backlog(ksm: Ksm) -> KernelBacklog:
    return KernelBacklog(
        capacity=ksm.read_int("hint_capacity"),
        pending=ksm.read_int("hints_pending"),
        dropped_overflow=ksm.read_int("hints_dropped_overflow"),
        dropped_age=ksm.read_int("hints_dropped_age"),
    )


@dataclass
class BacklogCap:
    """Admit hint records as the kernel's backlog allows; count what is dropped."""

    read: Callable[[], KernelBacklog]
    headroom: float = 1 / 16  # of capacity
    observe_ns: int = 100_000_000
    dropped: Counter[str] = field(default_factory=Counter)  # records, by reason
    dropped_pages: int = 0
    dropping: str | None = None  # the reason while the kernel is full and dropping
    _seen: KernelBacklog | None = None
    _seen_ns: int | None = None
    _since: int = 0  # records forwarded since the last look

    def _observe(self, now_ns: int) -> KernelBacklog:
        seen, seen_ns = self._seen, self._seen_ns
        if seen is not None and seen_ns is not None and now_ns - seen_ns < self.observe_ns:
            return seen
        prev, now = self._seen, self.read()
        self._seen, self._seen_ns, self._since = now, now_ns, 0
        limit = now.capacity - max(int(now.capacity * self.headroom), 1)
        if now.pending < limit:
            self.dropping = None
        elif prev is not None:
            if now.dropped_overflow > prev.dropped_overflow:
                self.dropping = "overflow"
            elif now.dropped_age > prev.dropped_age:
                self.dropping = "age"
        return now

    def take(self, pages: Sequence[int], now_ns: int) -> int:
        """How many of these records (``pages`` each) to forward: the first n."""
        if not pages:
            return 0
        k = self._observe(now_ns)
        n = len(pages)
        if k.capacity <= 0:
            grant, reason = 0, "hints_off"
        elif self.dropping is None:
            grant, reason = n, None
        else:
            grant = min(n, max(0, k.capacity - k.pending - self._since))
            reason = self.dropping
        self._since += grant
        if grant < n and reason is not None:
            self.dropped[reason] += n - grant
            self.dropped_pages += sum(pages[grant:])
        return grant

"""How fast ksmd can consume hints, and a token bucket that keeps to it.

ksmd wakes every ``sleep_millisecs`` and scans ``pages_to_scan`` pages; with
the KSM++ series, ``hint_interleave = H:L`` gives H of every H+L steps to
hinted pages. Hinted pages per second are therefore about::

    pages_to_scan * H / (H + L) * 1000 / sleep_millisecs

(an upper bound: scanning itself takes time). Hints beyond that only push
older ones out of the ``hint_capacity`` stack, so the controller caps the
rate there and allows a burst of one second's worth, at most a full stack
of single-page hints.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyksm.errors import PyksmError
from pyksm.kernel.ksm import Ksm

__all__ = ["PageBudget", "hint_pages_per_second", "parse_interleave"]


def parse_interleave(text: str) -> tuple[int, int]:
    h, sep, lin = text.strip().partition(":")
    try:
        hint, linear = int(h), int(lin)
    except ValueError:
        raise PyksmError(f"hint_interleave {text!r} is not H:L") from None
    if not sep or hint < 0 or linear < 0 or hint + linear == 0:
        raise PyksmError(f"hint_interleave {text!r} is not H:L")
    return hint, linear


def hint_pages_per_second(pages_to_scan: int, sleep_millisecs: int, interleave: str) -> float:
    hint, linear = parse_interleave(interleave)
    return pages_to_scan * hint / (hint + linear) * 1000.0 / max(sleep_millisecs, 1)


@dataclass
class PageBudget:
    """Token bucket in pages: ``rate`` per second, ``burst`` at most."""

    rate: float
    burst: float
    tokens: float = 0.0
    last_ns: int | None = None
    dropped_pages: int = 0

    @classmethod
    def from_ksm(cls, ksm: Ksm, headroom: float = 2.0) -> PageBudget:
        """Rate from the live knobs; ``headroom`` allows for hints that do not merge."""
        rate = (
            hint_pages_per_second(
                ksm.read_int("pages_to_scan"),
                ksm.read_int("sleep_millisecs"),
                str(ksm.read("hint_interleave")),
            )
            * headroom
        )
        capacity = ksm.read_int("hint_capacity")
        return cls(rate=rate, burst=max(rate, float(capacity)), tokens=max(rate, float(capacity)))

    def take(self, pages: int, now_ns: int) -> int:
        """Grant up to ``pages`` pages now; the rest is counted as dropped."""
        if self.last_ns is not None:
            self.tokens = min(self.burst, self.tokens + self.rate * (now_ns - self.last_ns) / 1e9)
        self.last_ns = now_ns
        grant = min(pages, int(self.tokens))
        self.tokens -= grant
        self.dropped_pages += pages - grant
        return grant

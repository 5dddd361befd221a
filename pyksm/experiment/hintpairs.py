"""Did each hinted page find its partner? (``pyksm experiment run --trace-hints``)

ksmd reports every page it visits because of a hint through the
``ksm:ksm_hint_page`` tracepoint (address and result). The runner keeps how
the guests' content ledgers changed from one sample to the next, so for each
hinted visit it knows what the page held and whether another guest's copy of
the same content had been visited earlier in the same scan round and still
held it. Such a visit that ends "unstable" (not merged, the page went into the
unstable tree) is a *miss*: the unstable-tree search did not find a page that
had been put there.

Classes of hinted visits:
  merged   result stable, pair or zero
  first    unstable, no copy elsewhere visited in this round
  missed   unstable, a copy elsewhere was visited in this round and kept its content
  failed   an identical page was found but the merge failed (page busy, or
           both in one huge page, which KSM then splits)
  other    none or volatile; or not decidable (outside the samples or the
           guests' RAM, or the scan round ended within the sample)

Content is known at 1 s resolution: a visit is taken to see what its frame
held at the next sample, so a frame rewritten twice within one second can be
misread. The kernel-build scenario writes each frame once.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyksm.probes import features

EVENT = "events/ksm/ksm_hint_page"
MERGED = frozenset({"stable", "pair", "zero"})
# Kernels with failed merges by cause add " cause X" ("-" unless "failed").
_LINE = re.compile(
    r"\s(\d+\.\d+): ksm_hint_page: mm \S+ addr 0x([0-9a-f]+) result (\w+)(?: cause (\S+))?"
)
_ENTRIES = re.compile(r"entries-in-buffer/entries-written: (\d+)/(\d+)")


@dataclass(frozen=True)
class Visit:
    t: float  # CLOCK_MONOTONIC seconds
    addr: int
    result: str
    cause: str | None = None  # why a "failed" merge failed (hint_pages_failed_*)


def parse_trace(text: str) -> tuple[list[Visit], int]:
    """Visits from tracefs ``trace`` text, and how many events were lost."""
    visits = [
        Visit(float(m[1]), int(m[2], 16), m[3], None if m[4] in (None, "-") else m[4])
        for m in _LINE.finditer(text)
    ]
    lost = 0
    if e := _ENTRIES.search(text):
        lost = int(e[2]) - int(e[1])
    return visits, lost


@dataclass
class LedgerHistory:
    """Each guest's ledger at the first sample, then what changed at each
    later one (frames, ids before, ids after), with the sample's time and
    full_scans."""

    times: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    initial: list[np.ndarray] = field(default_factory=list)
    changes: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=list)
    _last: list[np.ndarray] = field(default_factory=list)

    def record(self, t: float, full_scans: int, ledgers: list[np.ndarray]) -> None:
        if not self._last:
            self.initial = [a.copy() for a in ledgers]
            self.changes.append([])
        else:
            step = []
            for prev, cur in zip(self._last, ledgers, strict=True):
                idx = np.flatnonzero(prev != cur)
                step.append((idx, prev[idx], cur[idx]))
            self.changes.append(step)
        self._last = [a.copy() for a in ledgers]
        self.times.append(t)
        self.rounds.append(full_scans)


def classify(
    history: LedgerHistory, visits: Iterable[Visit], rams: list[tuple[int, int]]
) -> Counter[str]:
    """Count hinted visits by class (see the module docstring). ``rams`` are
    the guests' RAM (start, length); visits outside them are "other"."""
    out: Counter[str] = Counter()
    if not history.times:
        return out
    state = [a.copy() for a in history.initial]
    # content id -> visits elsewhere in this round: (guest, frame, round)
    seen: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    pending = sorted(visits, key=lambda v: v.t)
    i = 0
    while i < len(pending) and pending[i].t <= history.times[0]:
        out["other"] += 1  # before the first sample: content unknown
        i += 1
    for k in range(1, len(history.times)):
        changed: list[dict[int, int]] = []
        for n, (idx, before, after) in enumerate(history.changes[k]):
            state[n][idx] = after
            changed.append(dict(zip(idx.tolist(), before.tolist(), strict=True)))
        same_round = history.rounds[k] == history.rounds[k - 1]
        rnd = history.rounds[k - 1]
        while i < len(pending) and pending[i].t <= history.times[k]:
            v = pending[i]
            i += 1
            found = [n for n, (lo, ln) in enumerate(rams) if lo <= v.addr < lo + ln]
            if len(found) != 1 or not same_round:
                out["other"] += 1
                continue
            g = found[0]
            frame = (v.addr - rams[g][0]) >> 12
            c = int(state[g][frame])
            if v.result in MERGED:
                out["merged"] += 1
            elif v.result == "failed":
                out["failed"] += 1
            elif v.result == "unstable":
                partner = any(
                    pg != g
                    and pr == rnd
                    and int(state[pg][pf]) == c
                    and changed[pg].get(pf, c) == c
                    for pg, pf, pr in seen[c]
                )
                out["missed" if partner else "first"] += 1
            else:
                out["other"] += 1
            seen[c].append((g, frame, rnd))
    if i < len(pending):
        out["other"] += len(pending) - i  # after the last sample
    return out


class HintTrace:
    """Enable the tracepoint for one mode's run and read it back."""

    def __init__(self, path: Path | None = None) -> None:
        # features.tracefs() mounts it when it is not mounted yet (as root).
        self.tracefs = path or features.tracefs() or Path("/sys/kernel/tracing")
        self.running = False

    def available(self) -> bool:
        return (self.tracefs / EVENT / "enable").exists()

    def start(self, buffer_kb: int = 32768) -> None:
        (self.tracefs / "trace_clock").write_text("mono")
        (self.tracefs / "buffer_size_kb").write_text(str(buffer_kb))
        (self.tracefs / "trace").write_text("")  # clears the buffer
        (self.tracefs / EVENT / "enable").write_text("1")
        self.running = True

    def stop(self) -> tuple[list[Visit], int]:
        (self.tracefs / EVENT / "enable").write_text("0")
        self.running = False
        visits, lost = parse_trace((self.tracefs / "trace").read_text(errors="replace"))
        (self.tracefs / "trace").write_text("")
        return visits, lost

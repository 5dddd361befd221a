"""Adaptive ``hint_interleave``: the share of hint steps follows the kernel's backlog.

ksmd spends H of every H+L steps of its ``pages_to_scan`` budget on hinted
pages (``/sys/kernel/mm/ksm/hint_interleave`` = "H:L"; the kernel refuses
L = 0 and H > 16 L, so the linear scan, which alone ends rounds, keeps at
least 1/17 of every batch). A hint step with no hint to try becomes a linear
step, so hint steps cost nothing while no hint waits; but while a burst of
hints waits, a fixed 1:1 leaves half the budget to the linear scan and the
hints wait, some until they expire (``hints_dropped_age``).

The law, evaluated every ``period`` (0.5 s), state in and decision out
(:func:`decide`)::

    steps/s   = ksmd's steps a second in the last tick     its whole budget, as it ran:
                (pages_scanned), at most                     a busy host or a VM gives it
                pages_to_scan * 1000 / sleep_millisecs      less than it asks for
    backlog   = hints_pending * pages per hint             scan steps the queued hints need
    projected = backlog + growth/s * horizon               if it keeps growing as in the last tick
    need      = projected / (steps/s * horizon)            the share of all steps that clears it
                                                           within ``horizon`` (1 s)
    rungs     = the knob as found (base), then the ladder's ratios with a larger
                hint share H/(H+L) (default ladder 1:1, 2:1, 4:1, 8:1, 16:1)

    up     the lowest rung whose share >= need (the top one if none does), and at
           least one rung up if the kernel dropped hints (age or overflow) since the
           last tick; taken at once
    down   one rung per tick, only while the kernel drops nothing and the rung below
           would clear the backlog with a margin (its share * ``down_margin`` (0.5)
           >= need): hysteresis
    base   once no hint was pending and none dropped for ``settle`` (2) ticks in a row

Every rung is a ratio the kernel accepts, so the law never starves the linear
scan and never asks for more than ``pages_to_scan``.

:class:`AdaptiveInterleave` is the thin part: it reads the counters through
:class:`pyksm.kernel.ksm.Ksm`, writes the knob when the rung changes, and
writes the value it found back on exit (its context manager; the collector
enters it in its ExitStack, so errors, SIGINT and SIGTERM all restore it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from pyksm.control.ratecap import KernelBacklog, read_backlog
from pyksm.errors import PyksmError
from pyksm.kernel.ksm import Ksm

__all__ = [
    "DEFAULT_LADDER",
    "AdaptiveInterleave",
    "Decision",
    "Law",
    "LawState",
    "Observation",
    "PagesPerHint",
    "Ratio",
    "check_ladder",
    "decide",
    "format_ratio",
    "parse_ladder",
    "parse_ratio",
    "share",
]

Ratio = tuple[int, int]  # (H, L): hint steps, linear steps
# The kernel's bounds on hint_interleave (kernel-patches/0006): L >= 1, H <= 16 L, both <= 1000.
MAX_RATIO = 16
MAX_TERM = 1000
DEFAULT_LADDER: tuple[Ratio, ...] = ((1, 1), (2, 1), (4, 1), (8, 1), (16, 1))


def format_ratio(r: Ratio) -> str:
    return f"{r[0]}:{r[1]}"


def share(r: Ratio) -> float:
    """The share of ksmd's steps that ``r`` gives to hints."""
    return r[0] / (r[0] + r[1])


def parse_ratio(text: str, kernel_bounds: bool = True) -> Ratio:
    """ "H:L" -> (H, L); with ``kernel_bounds``, only what the kernel accepts."""
    h, sep, low = text.strip().partition(":")
    try:
        r = (int(h), int(low))
    except ValueError:
        raise PyksmError(f"hint_interleave {text!r} is not H:L") from None
    if not sep or min(r) < 0 or sum(r) == 0:
        raise PyksmError(f"hint_interleave {text!r} is not H:L")
    if kernel_bounds and (r[1] < 1 or r[0] > MAX_RATIO * r[1] or max(r) > MAX_TERM):
        raise PyksmError(
            f"hint_interleave {text!r}: L must be at least 1, H at most {MAX_RATIO} x L "
            f"and both at most {MAX_TERM} (the kernel refuses it)"
        )
    return r


def parse_ladder(text: str) -> tuple[Ratio, ...]:
    """ "1:1,2:1,4:1" -> ratios the kernel accepts, in strictly growing hint share."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise PyksmError(f"interleave ladder {text!r} is empty: give H:L,H:L,...")
    return check_ladder(tuple(parse_ratio(p) for p in parts))


def check_ladder(ladder: tuple[Ratio, ...]) -> tuple[Ratio, ...]:
    """``ladder`` if the kernel accepts every rung and the hint share grows."""
    if not ladder:
        raise PyksmError("the interleave ladder is empty")
    for r in ladder:
        parse_ratio(format_ratio(r))
    for a, b in itertools.pairwise(ladder):
        if share(b) <= share(a):
            raise PyksmError(
                f"interleave ladder {','.join(map(format_ratio, ladder))}: {format_ratio(b)} "
                f"after {format_ratio(a)} gives hints no larger share (the rungs must grow)"
            )
    return ladder


@dataclass(frozen=True)
class Law:
    """The control law's parameters; ``rungs[0]`` is the base ratio."""

    rungs: tuple[Ratio, ...]
    horizon_s: float = 1.0  # clear the backlog within this many seconds
    down_margin: float = 0.5  # step down only if the rung below clears it this much faster
    settle: int = 2  # empty ticks in a row before going back to the base

    @classmethod
    def from_base(cls, base: Ratio, ladder: tuple[Ratio, ...] = DEFAULT_LADDER) -> Law:
        """The base, then every ladder rung with a larger hint share than it."""
        return cls(rungs=(base, *(r for r in ladder if share(r) > share(base))))


@dataclass(frozen=True)
class LawState:
    rung: int = 0
    backlog: float = 0.0  # pages, at the last tick
    calm: int = 0  # ticks in a row with nothing pending and nothing dropped


@dataclass(frozen=True)
class Observation:
    pending: int  # hints_pending: records queued or in progress
    pages_per_hint: float  # pages a record covers (the controller's recent mean)
    dropped: int  # hints_dropped_age + hints_dropped_overflow since the last tick
    steps_per_s: float  # ksmd's steps a second (as measured, at most as set)
    dt: float  # seconds since the last tick


@dataclass(frozen=True)
class Decision:
    state: LawState
    ratio: Ratio
    need: float  # share of all steps that would clear the backlog within the horizon
    reason: str  # backlog, drops, hold, down, settling, base


def _dropped(b: KernelBacklog) -> int:
    """Hints the kernel dropped unvisited so far (expired or overwritten)."""
    return b.dropped_age + b.dropped_overflow


def decide(law: Law, state: LawState, obs: Observation) -> Decision:
    """One tick of the law (see the module's docstring)."""
    top = len(law.rungs) - 1
    backlog = max(obs.pending, 0) * max(obs.pages_per_hint, 1.0)
    growth = max(0.0, backlog - state.backlog) / obs.dt if obs.dt > 0 else 0.0
    projected = backlog + growth * law.horizon_s
    budget = max(obs.steps_per_s, 1e-9) * law.horizon_s
    need = projected / budget
    if obs.pending <= 0 and obs.dropped <= 0:
        calm = state.calm + 1
        rung, reason = (0, "base") if calm >= law.settle else (state.rung, "settling")
        if rung == state.rung == 0:
            reason = "base"
        return Decision(LawState(rung, backlog, calm), law.rungs[rung], need, reason)
    up = next((i for i, r in enumerate(law.rungs) if share(r) >= need), top)
    reason = "backlog"
    if obs.dropped > 0 and up <= state.rung:
        up, reason = min(state.rung + 1, top), "drops"
    if up > state.rung:
        rung = up
    elif obs.dropped > 0:
        rung = state.rung  # the top rung, and still dropping: no way down
    else:
        fits = next((i for i, r in enumerate(law.rungs) if share(r) * law.down_margin >= need), top)
        rung, reason = (state.rung - 1, "down") if fits < state.rung else (state.rung, "hold")
    return Decision(LawState(rung, backlog, 0), law.rungs[rung], need, reason)


@dataclass
class PagesPerHint:
    """Mean pages per hint record of what was sent since the last update
    (the previous estimate while nothing was sent)."""

    value: float = 1.0
    _hints: int = 0
    _pages: int = 0

    def update(self, hints_total: int, pages_total: int) -> float:
        dh, dp = hints_total - self._hints, pages_total - self._pages
        if dh > 0 and dp > 0:
            self.value = dp / dh
        self._hints, self._pages = hints_total, pages_total
        return self.value


@dataclass
class AdaptiveInterleave:
    """The law on a live kernel: reads counters, writes ``hint_interleave``.

    ``with AdaptiveInterleave(Ksm()) as a:`` reads the knob (the base) and
    writes it back on exit, however the block ends; call :meth:`tick` at any
    rate, it acts every ``period_s``.
    """

    ksm: Ksm
    ladder: tuple[Ratio, ...] = DEFAULT_LADDER
    period_s: float = 0.5
    original: str | None = None  # the knob as found, written back on exit
    law: Law | None = None
    state: LawState = field(default_factory=LawState)
    current: Ratio | None = None
    changes: int = 0
    ticks_by_ratio: dict[str, int] = field(default_factory=dict)
    last: Decision | None = None
    _ppp: PagesPerHint = field(default_factory=PagesPerHint)
    _dropped: int = 0
    _scanned: int | None = None  # pages_scanned (6.8+) at the last tick
    _last_tick: float | None = None

    def start(self, now: float) -> None:
        self.original = self.ksm.read_raw("hint_interleave")
        base = parse_ratio(self.original, kernel_bounds=False)
        self.law = Law.from_base(base, self.ladder)
        self.current = base
        self._dropped = self._drops()
        self._scanned = self._pages_scanned()
        self._last_tick = now

    def __enter__(self) -> AdaptiveInterleave:
        import time

        self.start(time.monotonic())
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore()

    def _pages_scanned(self) -> int | None:
        return self.ksm.read_int("pages_scanned") if self.ksm.has("pages_scanned") else None

    def _steps_per_s(self, dt: float) -> float:
        """ksmd's steps a second: as set, or as it ran in the last tick if that was less."""
        sleep_ms = max(self.ksm.read_int("sleep_millisecs"), 1)
        nominal = self.ksm.read_int("pages_to_scan") * 1000.0 / sleep_ms
        scanned, last = self._pages_scanned(), self._scanned
        self._scanned = scanned
        if scanned is None or last is None or scanned <= last:
            return nominal  # not measured, or ksmd did not run: the ratio does not matter
        return min(nominal, (scanned - last) / dt)

    def _drops(self) -> int:
        return _dropped(read_backlog(self.ksm))

    def tick(self, now: float, hints_sent: int, pages_sent: int) -> Decision | None:
        """Apply the law if a period has passed since the last tick; the decision, or None."""
        if self.law is None or self._last_tick is None:
            raise PyksmError("AdaptiveInterleave.tick before start")
        dt = now - self._last_tick
        if dt < self.period_s:
            return None
        backlog = read_backlog(self.ksm)  # the rate cap's view of the same counters
        dropped = _dropped(backlog)
        obs = Observation(
            pending=backlog.pending,
            pages_per_hint=self._ppp.update(hints_sent, pages_sent),
            dropped=dropped - self._dropped,
            steps_per_s=self._steps_per_s(dt),
            dt=dt,
        )
        d = decide(self.law, self.state, obs)
        self._dropped, self._last_tick, self.state, self.last = dropped, now, d.state, d
        if d.ratio != self.current:
            self.ksm.write("hint_interleave", format_ratio(d.ratio))
            self.current = d.ratio
            self.changes += 1
        key = format_ratio(d.ratio)
        self.ticks_by_ratio[key] = self.ticks_by_ratio.get(key, 0) + 1
        return d

    def restore(self) -> None:
        """Write the knob as found back (once changed); safe to call more than once."""
        if self.original is None or self.law is None:
            return
        if self.current != self.law.rungs[0]:
            self.ksm.write("hint_interleave", self.original)
            self.current = self.law.rungs[0]

"""Metrics over repetitions: per mode the median of each figure with its 95 %
interval (pyksm.analysis.intervals), ratios to ksm per repetition pair, and
which repetitions ran below their guests' pace.

- Every figure of pyksm.report.metrics is taken per repetition, then
  summarized: median [95 % percentile-bootstrap interval] over the n
  repetitions (n = 2: [min, max]; n = 1: the value).
- Ratios (captured sharing vs ksm, ksmd CPU vs ksm) are taken per pair:
  repetition i of a mode over repetition i of ksm (run in the same round of
  the interleaved plan), then summarized. A pair whose ksm value is below
  the floor (captured sharing < 0.001: ksm merged next to nothing; CPU 0)
  has no ratio.
- t50/t90 "never" counts as infinitely late (a median may be "never").
- A repetition whose slowest guest read less than IO_PACE_OK of its set rate
  is *below pace*: the modes then ran different workloads. The medians over
  all repetitions are kept, and when any repetition is below pace the same
  figures over the paced repetitions only (ratios: pairs where both are) are
  given beside them, with how many were flagged.
- Steady scenarios (config.json's scenario.steady_window_s): captured
  sharing over each repetition's last window and its Theil-Sen trend
  (pyksm.analysis.steady), summarized alike. The trend's headline interval
  is Sen's for one repetition, the median's interval over the repetitions'
  slopes for more; the verdict follows pyksm.analysis.steady.verdict on it.
- Counter groups (``COUNTER_GROUPS``): tables of counters per mode, medians
  over the repetitions, each its own section of a mode in metrics.json. The
  diagnosis counters (COW breaks of KSM pages, hints dropped by reason) are
  one; the kernel's failed merges by cause can be another beside it.
- Guest read throughput (real QEMU guests, ``GuestReads``): per mode the
  median [interval] of the guests' read MiB/s over the repetitions (all
  guests and by guest), and its ratio to ksm per repetition pair like the
  other ratios (``READ_RATIO``). ksm++ modes run the collector and ksm modes
  do not, but ksmd also scans the hinted pages in ksm++ modes: the ratio
  charges both. Which repetitions' figures are partial (a workload that did
  not finish, read until the run's end) is kept per figure, so that a median
  that counts one is marked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any

from pyksm.analysis import steady
from pyksm.analysis.intervals import CONFIDENCE, RESAMPLES, SEED, Interval, median_interval
from pyksm.experiment.results import IO_PACE_OK
from pyksm.probes.ksmd_visits import KINDS, KindCost
from pyksm.report import metrics
from pyksm.report.dataset import Experiment
from pyksm.report.metrics import ModeMetrics

__all__ = [
    "BASE",
    "COUNTER_GROUPS",
    "DIAGNOSIS",
    "DISK_BLOCKS",
    "QUANTITIES",
    "RATIOS",
    "REACH_FLOOR_PAGES",
    "REACH_KEY",
    "READ_RATIO",
    "SCHEMA",
    "STEADY",
    "CounterGroup",
    "ExperimentStats",
    "GuestReads",
    "ModeStats",
    "Quantity",
    "Ratio",
    "Stat",
    "Trend",
    "baseline_of",
    "linear_twin",
    "metrics_json",
    "summarize",
]

SCHEMA = "pyksm.report.metrics/2"
BASE = "ksm"


@dataclass(frozen=True)
class Quantity:
    """One figure of a repetition; ``key`` (with its unit) names it in metrics.json."""

    key: str
    get: Callable[[ModeMetrics], float | None]
    # None from get() means "never reached" (counted as inf), not "no value".
    never: bool = False


@dataclass(frozen=True)
class Ratio:
    """A figure of a mode over the same figure of ksm, per repetition pair."""

    key: str
    # None: the repetition has no value (the pair has no ratio).
    get: Callable[[ModeMetrics], float | None]
    # The ksm value must exceed this for the pair to have a ratio.
    floor: float


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("captured_sharing_fraction", lambda m: m.captured),
    Quantity("t50_s", lambda m: m.t50, never=True),
    Quantity("t90_s", lambda m: m.t90, never=True),
    Quantity("mean_sharing_mib", lambda m: m.mean_sharing_mib),
    Quantity("mean_oracle_mib", lambda m: m.mean_oracle_mib),
    Quantity("peak_oracle_mib", lambda m: m.peak_oracle * metrics.MIB_PER_PAGE),
    Quantity("ksmd_cpu_percent", lambda m: m.ksmd_cpu_pct),
    Quantity("ksmd_us_per_scanned_page", lambda m: m.ksmd_us_per_page),
    Quantity("ksmd_ms_per_saved_page", lambda m: m.ksmd_ms_per_saved_page),
    Quantity("pages_scanned_count", lambda m: m.pages_scanned),
    Quantity("hints_received_count", lambda m: m.hints_received),
    Quantity("hint_pages_scanned_count", lambda m: m.hint_pages_scanned),
    Quantity("hint_pages_merged_count", lambda m: m.hint_pages_merged),
    Quantity("hint_pages_failed_count", lambda m: m.hint_pages_failed),
    Quantity("hints_dropped_count", lambda m: m.hints_dropped),
    Quantity("guest_io_pace_fraction", lambda m: m.io_achieved),
    Quantity("cpu_idle_fraction", lambda m: m.idle_fraction),
    Quantity("cpu_steal_fraction", lambda m: m.steal_fraction),
)

RATIOS: tuple[Ratio, ...] = (
    Ratio("captured_sharing_vs_ksm_ratio", lambda m: m.captured, 1e-3),
    Ratio("ksmd_cpu_vs_ksm_ratio", lambda m: m.ksmd_cpu_pct, 0.0),
    # ksmd's cost per scanned page, same pair: what a hinted visit adds, as
    # far as the modes scan alike (no-io, unique-io).
    Ratio("ksmd_us_per_scanned_page_vs_ksm_ratio", lambda m: m.ksmd_us_per_page, 0.0),
)
# ksmd CPU a mode spent to first share as many pages as ksm's peak, over the
# CPU ksm spent to get there, per repetition pair. Never reached: inf. Only
# pairs where ksm's peak is at least REACH_FLOOR_PAGES (1 MiB): below that the
# level is noise.
REACH_KEY = "ksmd_cpu_to_ksm_peak_vs_ksm_ratio"
REACH_FLOOR_PAGES = 256
# Real QEMU guests' read throughput over all guests, a mode's over ksm's.
READ_RATIO = Ratio("guest_read_throughput_vs_ksm_ratio", lambda m: m.guest_read_mib_s, 0.0)


def _steady(
    get: Callable[[steady.SteadyState], float | None],
) -> Callable[[ModeMetrics], float | None]:
    return lambda m: None if m.steady is None else get(m.steady)


# Steady scenarios: keys of a mode's "steady_state" section in metrics.json.
STEADY: tuple[Quantity, ...] = (
    Quantity("window_s", _steady(lambda s: s.window_s)),
    Quantity("captured_sharing_fraction", _steady(lambda s: s.captured)),
    Quantity("trend_per_10min_fraction", _steady(lambda s: s.slope_per_10min)),
    Quantity("trend_ci_low_per_10min_fraction", _steady(lambda s: s.slope_low_per_10min)),
    Quantity("trend_ci_high_per_10min_fraction", _steady(lambda s: s.slope_high_per_10min)),
)


@dataclass(frozen=True)
class CounterGroup:
    """A table of counters per mode: ``columns`` are (table column, quantity);
    ``key`` names the group's section of a mode in metrics.json."""

    key: str
    title: str
    note: str
    columns: tuple[tuple[str, Quantity], ...]
    fmt: str = ".0f"  # how the table formats a value


def _diag(name: str) -> Callable[[ModeMetrics], float | None]:
    return lambda m: None if m.diagnosis is None else getattr(m.diagnosis, name)


DIAGNOSIS = CounterGroup(
    "diagnosis",
    "Diagnosis counters",
    "How much each counter grew over a repetition's measured run, median [95 % interval] "
    "over the repetitions. COW breaks: write faults that copied a KSM page (/proc/vmstat "
    "cow_ksm; every process, merged pages written to). Hints dropped unprocessed, by reason: "
    "overflow (overwritten by newer hints), age (older than hint_max_age_ms), stale (their "
    "mm gone or not under KSM), flush (run=2 or a capacity change). LRU drains: per-CPU LRU "
    "drains ksmd did to retry a hinted merge that failed on a page in an LRU batch. Empty: "
    "the kernel lacks the counter.",
    (
        ("COW breaks of KSM pages", Quantity("cow_ksm_count", _diag("cow_ksm"))),
        ("hinted merges", Quantity("hint_pages_merged_count", lambda m: m.hint_pages_merged)),
        (
            "dropped: overflow",
            Quantity("hints_dropped_overflow_count", _diag("hints_dropped_overflow")),
        ),
        ("dropped: age", Quantity("hints_dropped_age_count", _diag("hints_dropped_age"))),
        ("dropped: stale", Quantity("hints_dropped_stale_count", _diag("hints_dropped_stale"))),
        ("dropped: flush", Quantity("hints_dropped_flush_count", _diag("hints_dropped_flush"))),
        ("LRU drains", Quantity("hint_lru_drains_count", _diag("hint_lru_drains"))),
    ),
)
DISK_BLOCKS = CounterGroup(
    "disk_blocks",
    "Disk blocks (snapshot oracle)",
    "Pages holding a block of the guests' shared disk: what the reads created. of whole "
    "RAM: ∫ their opportunities dt / ∫ all opportunities dt; the rest is mostly the boot "
    "content both guests share, which every mode merges in the warm-up, so the whole-RAM "
    "ratio of two modes is at most 1 / (1 - of whole RAM). captured: "
    "∫ the guests' sharing among them dt / ∫ their opportunities dt. across guests: the share "
    "of those opportunities that a page of one guest can find only in another (per block, the "
    "guests holding it minus one); the rest are a guest's own copies of a block it holds "
    "(a reader's buffer, a freed frame), made where no host read path sees them. captured "
    "across guests: the same ratio for that part, what hints can reach. Median [95 % "
    "interval] over the repetitions; empty for runs from before the split.",
    (
        ("of whole RAM", Quantity("of_whole_ram_fraction", lambda m: m.disk_share)),
        ("captured", Quantity("captured_fraction", lambda m: m.disk_captured)),
        ("across guests", Quantity("across_guests_fraction", lambda m: m.disk_cross_share)),
        (
            "captured across guests",
            Quantity("captured_across_guests_fraction", lambda m: m.disk_cross_captured),
        ),
    ),
    fmt=".3f",
)
COUNTER_GROUPS: tuple[CounterGroup, ...] = (DIAGNOSIS, DISK_BLOCKS)


@dataclass(frozen=True)
class Trend:
    """A mode's steady-state trend over its repetitions: the slope (fraction
    of the oracle per 10 minutes) with its interval and the verdict on it.
    ``interval``: "sen" (one repetition: Sen's rank interval), or the kind of
    the median's interval over the repetitions' slopes."""

    slope: float | None
    low: float | None
    high: float | None
    interval: str
    verdict: steady.Verdict
    # Repetitions whose own verdict is "no downward trend", of those with a slope.
    reps_no_downward: int
    reps_with_slope: int


@dataclass(frozen=True)
class Stat:
    """A figure over repetitions: ``reps[i]`` gave ``interval.values[i]``."""

    interval: Interval
    reps: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        iv = self.interval
        return {
            "median": _num(iv.median),
            "ci_low": _num(iv.low),
            "ci_high": _num(iv.high),
            "n": iv.n,
            "interval": iv.kind,
            "values": [_num(v) for v in iv.values],
            "reps": list(self.reps),
        }


def _num(v: float | None) -> float | None:
    """JSON has no infinity: "never" is null."""
    return None if v is None or math.isinf(v) else v


def _stat(pairs: list[tuple[int, float | None]], never: bool = False) -> Stat:
    kept = [(r, math.inf if v is None else float(v)) for r, v in pairs if v is not None or never]
    return Stat(median_interval([v for _, v in kept]), tuple(r for r, _ in kept))


@dataclass(frozen=True)
class GuestReads:
    """Real QEMU guests' read throughput in one mode over its repetitions
    (pyksm.report.metrics: MiB/s over all guests, and by guest)."""

    all_guests: Stat
    by_guest: dict[str, Stat]
    # READ_RATIO per repetition pair; None for ksm itself and without ksm.
    vs_ksm: Stat | None
    # Repetitions in which some guest's workload has no figure (it did not
    # finish, and QEMU's block statistics were not read): no all-guests figure.
    unfinished: tuple[int, ...]
    # Partial figures (pyksm.report.metrics): the repetitions with one among
    # their guests (their all-guests figure is partial), by guest, and the
    # pairs of vs_ksm whose mode's or ksm's repetition has one.
    partial: tuple[int, ...] = ()
    partial_by_guest: dict[str, tuple[int, ...]] = field(default_factory=dict)
    vs_ksm_partial: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "all_guests_mib_per_s": self.all_guests.to_json(),
            "by_guest_mib_per_s": {g: s.to_json() for g, s in self.by_guest.items()},
            "vs_ksm_ratio": None if self.vs_ksm is None else self.vs_ksm.to_json(),
            "unfinished_reps": list(self.unfinished),
            "partial_reps": list(self.partial),
            "by_guest_partial_reps": {g: list(r) for g, r in self.partial_by_guest.items()},
            "vs_ksm_partial_reps": list(self.vs_ksm_partial),
        }


@dataclass
class ModeStats:
    """One mode over the repetitions counted (all, or only those at pace)."""

    mode: str
    runs: list[ModeMetrics]
    # The linear mode the ratios divide by (see baseline_of); None: no ratios.
    baseline: str | None
    stats: dict[str, Stat]  # by Quantity.key
    ratios: dict[str, Stat]  # by Ratio.key; empty without a baseline
    cpu_by_task: dict[str, Stat]  # % of one CPU, by task
    hint_visits: dict[str, int] | None  # summed over the repetitions
    # ksmd's visits by kind (--visit-cost), summed over the repetitions that
    # timed them; None: none did.
    ksmd_visits: dict[str, KindCost] | None = None
    # Steady scenarios: by STEADY key; None for other scenarios.
    steady: dict[str, Stat] | None = None
    # By CounterGroup.key, then Quantity.key; a group no repetition has is left out.
    counters: dict[str, dict[str, Stat]] = field(default_factory=dict)

    @property
    def trend(self) -> Trend | None:
        """The steady-state trend over the repetitions (None: not a steady scenario)."""
        if self.steady is None:
            return None
        states = [m.steady for m in self.runs if m.steady is not None]
        own = [s.verdict for s in states if s.slope_per_10min is not None]
        slopes = self.steady["trend_per_10min_fraction"].interval
        if slopes.n == 1:
            one = next(s for s in states if s.slope_per_10min is not None)
            low, high, kind = one.slope_low_per_10min, one.slope_high_per_10min, "sen"
        else:
            low, high, kind = slopes.low, slopes.high, slopes.kind
        return Trend(
            slope=slopes.median,
            low=low,
            high=high,
            interval=kind,
            verdict=steady.verdict(slopes.median, high),
            reps_no_downward=own.count(steady.NO_DOWNWARD),
            reps_with_slope=len(own),
        )

    # Failed hinted merges by cause, summed over the repetitions that
    # recorded them; None when none did.
    merge_failures: dict[str, int] | None = None
    # Real QEMU guests' read throughput; None: no repetition recorded workloads.
    guest_reads: GuestReads | None = None

    @property
    def failure_reps(self) -> int:
        """Repetitions that recorded failed merges by cause."""
        return sum(1 for m in self.runs if m.merge_failures is not None)

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def below_pace(self) -> list[int]:
        """Repetitions whose slowest guest fell below IO_PACE_OK of its rate."""
        return [m.rep for m in self.runs if m.below_pace]

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "reps": [m.rep for m in self.runs],
            "below_pace_reps": self.below_pace,
            "metrics": {k: s.to_json() for k, s in self.stats.items()},
            "baseline_mode": self.baseline,
            "vs_ksm": {k: s.to_json() for k, s in self.ratios.items()},
            "cpu_by_task_percent": {k: s.to_json() for k, s in self.cpu_by_task.items()},
            "hint_visits_count": self.hint_visits,
            "ksmd_visits": None if self.ksmd_visits is None else self._visits_json(),
            "steady_state": None if self.steady is None else self._steady_json(),
            **{
                group: {k: s.to_json() for k, s in stats.items()}
                for group, stats in self.counters.items()
            },
            "merge_failures_count": self.merge_failures,
            "guest_read_throughput": None
            if self.guest_reads is None
            else self.guest_reads.to_json(),
        }

    @property
    def visit_reps(self) -> int:
        """Repetitions that timed ksmd's visits (--visit-cost)."""
        return sum(1 for m in self.runs if m.ksmd_visits is not None)

    def _visits_json(self) -> dict[str, Any]:
        assert self.ksmd_visits is not None
        return {
            kind: {
                "visits_per_rep_count": c.visits / self.visit_reps,
                "merges_per_rep_count": c.merges / self.visit_reps,
                "us_per_visit": c.us_per_visit(c.visit_s),
                "hint_walk_us_per_visit": c.us_per_visit(c.hint_walk_s),
                "unstable_walk_us_per_visit": c.us_per_visit(c.unstable_walk_s),
                "rmap_lookup_us_per_visit": c.us_per_visit(c.lookup_s),
            }
            for kind, c in self.ksmd_visits.items()
        }

    def _steady_json(self) -> dict[str, Any]:
        assert self.steady is not None
        trend = self.trend
        out: dict[str, Any] = {k: s.to_json() for k, s in self.steady.items()}
        states = [m.steady for m in self.runs if m.steady is not None]
        out["no_downward_trend_count"] = sum(s.verdict == steady.NO_DOWNWARD for s in states)
        out["downward_trend_count"] = sum(s.verdict == steady.DOWNWARD for s in states)
        out["too_short_count"] = sum(s.verdict == steady.TOO_SHORT for s in states)
        out["shortened_count"] = sum(s.shortened for s in states)
        if trend is not None:
            out["headline_trend_ci_low_per_10min_fraction"] = _num(trend.low)
            out["headline_trend_ci_high_per_10min_fraction"] = _num(trend.high)
            out["headline_no_downward_trend_count"] = int(trend.verdict == steady.NO_DOWNWARD)
        return out


@dataclass
class ExperimentStats:
    exp: Experiment
    # Every mode over all its repetitions.
    modes: dict[str, ModeStats]
    # Every mode over its repetitions at pace only; None when none was below.
    paced: dict[str, ModeStats] | None

    @property
    def reps_total(self) -> int:
        return sum(s.n for s in self.modes.values())

    @property
    def reps_below_pace(self) -> int:
        return sum(len(s.below_pace) for s in self.modes.values())

    def to_json(self) -> dict[str, Any]:
        cfg = self.exp.config
        return {
            "scenario": self.exp.scenario,
            "path": str(self.exp.path),
            "complete": self.exp.complete,
            "repeat": cfg.get("repeat", 1),
            "order": cfg.get("order"),
            "repetitions": self.reps_total,
            "repetitions_below_pace": self.reps_below_pace,
            "host": None if self.exp.host is None else asdict(self.exp.host),
            "modes": {m: s.to_json() for m, s in self.modes.items()},
            "paced_only": None
            if self.paced is None
            else {m: s.to_json() for m, s in self.paced.items()},
        }


def linear_twin(mode: str) -> str:
    """The linear mode a mode is measured against, without the mode's scan
    rate (@P:MS) or fixed interleave (=H:L): a hinted mode's twin
    (ksm++-nosmart: ksm-nosmart), an adaptive interleave's the same
    (ksm++-adaptive: ksm, ksm++-advisor-adaptive: ksm-advisor), a linear
    mode itself."""
    head = mode.partition("@")[0].partition("=")[0]
    return head.replace("ksm++", "ksm", 1).removesuffix("-adaptive")


def baseline_of(mode: str, present: Collection[str]) -> str | None:
    """The linear mode whose repetitions ``mode``'s ratios divide by: its
    linear twin where the experiment ran it (ksm++-nosmart: ksm-nosmart,
    ksm++-advisor@140:20: ksm-advisor@140:20, ksm++-advisor-adaptive:
    ksm-advisor), else ksm; None for ksm itself
    or when neither ran."""
    if mode == BASE:
        return None
    _, at, rate = mode.partition("@")
    if mode.startswith("ksm++"):
        twin = linear_twin(mode) + at + rate
        if twin in present:
            return twin
    return BASE if BASE in present else None


def _pairs(
    runs: list[ModeMetrics], base: list[ModeMetrics] | None
) -> list[tuple[ModeMetrics, ModeMetrics]] | None:
    """Each repetition with its baseline's of the same number; None without
    a baseline (ksm itself, or no linear mode ran)."""
    if base is None:
        return None
    by_rep = {b.rep: b for b in base}
    return [(m, by_rep[m.rep]) for m in runs if m.rep in by_rep]


def _ratios(
    runs: list[ModeMetrics],
    base: list[ModeMetrics] | None,
    ratios: tuple[Ratio, ...] = RATIOS,
) -> dict[str, Stat]:
    """Per repetition pair; none without a baseline (ksm itself: 1 by definition)."""
    pairs = _pairs(runs, base)
    if pairs is None:
        return {}
    out = {}
    for r in ratios:
        values: list[tuple[int, float | None]] = [
            (m.rep, v / w)
            for m, b in pairs
            if (v := r.get(m)) is not None and (w := r.get(b)) is not None and w > r.floor
        ]
        out[r.key] = _stat(values)
    return out


def _reach_ksm(runs: list[ModeMetrics], base: list[ModeMetrics] | None) -> Stat | None:
    """REACH_KEY's figure; None without a baseline."""
    pairs = _pairs(runs, base)
    if pairs is None:
        return None
    values: list[tuple[int, float | None]] = []
    for m, b in pairs:
        level = b.peak_sharing
        cost = b.cpu_to_reach(level) if level >= REACH_FLOOR_PAGES else None
        if not cost:  # ksm below the floor, or it got there at no CPU
            continue
        own = m.cpu_to_reach(level)
        values.append((m.rep, None if own is None else own / cost))
    return _stat(values, never=True)


def _guest_reads(runs: list[ModeMetrics], base: list[ModeMetrics] | None) -> GuestReads | None:
    recorded = [m for m in runs if m.guest_read_mib_s_by_guest is not None]
    if not recorded:
        return None
    guests = dict.fromkeys(g for m in recorded for g in m.guest_read_mib_s_by_guest or {})
    by_guest = {
        g: _stat([(m.rep, (m.guest_read_mib_s_by_guest or {}).get(g)) for m in recorded])
        for g in guests
    }
    vs_ksm = _ratios(recorded, base, (READ_RATIO,)).get(READ_RATIO.key)
    partial = {m.rep for m in recorded if m.guest_read_partial}
    base_partial = {b.rep for b in base or [] if b.guest_read_partial}
    all_guests = _stat([(m.rep, m.guest_read_mib_s) for m in recorded])
    return GuestReads(
        all_guests=all_guests,
        by_guest=by_guest,
        vs_ksm=vs_ksm,
        unfinished=tuple(m.rep for m in recorded if m.guest_read_mib_s is None),
        partial=tuple(r for r in all_guests.reps if r in partial),
        partial_by_guest={
            g: tuple(m.rep for m in recorded if g in m.guest_read_partial)
            for g in guests
            if any(g in m.guest_read_partial for m in recorded)
        },
        vs_ksm_partial=()
        if vs_ksm is None
        else tuple(r for r in vs_ksm.reps if r in partial | base_partial),
    )


def _counters(runs: list[ModeMetrics]) -> dict[str, dict[str, Stat]]:
    out = {}
    for group in COUNTER_GROUPS:
        stats = {q.key: _stat([(m.rep, q.get(m)) for m in runs]) for _, q in group.columns}
        if any(s.interval.n for s in stats.values()):
            out[group.key] = stats
    return out


def _mode_stats(
    mode: str, runs: list[ModeMetrics], baseline: str | None, base: list[ModeMetrics] | None
) -> ModeStats:
    tasks = sorted({t for m in runs for t in m.cpu_by_task})
    visits = [m for m in runs if m.hint_visits]
    is_steady = any(m.steady is not None for m in runs)
    failures = [m.merge_failures for m in runs if m.merge_failures is not None]
    ratios = _ratios(runs, base)
    reach = _reach_ksm(runs, base)
    if reach is not None:
        ratios[REACH_KEY] = reach
    return ModeStats(
        mode=mode,
        runs=runs,
        baseline=baseline,
        stats={q.key: _stat([(m.rep, q.get(m)) for m in runs], q.never) for q in QUANTITIES},
        ratios=ratios,
        cpu_by_task={t: _stat([(m.rep, m.cpu_by_task.get(t)) for m in runs]) for t in tasks},
        hint_visits={
            k: sum(m.hint_visits.get(k, 0) for m in visits if m.hint_visits)
            for k in sorted({k for m in visits if m.hint_visits for k in m.hint_visits})
        }
        if visits
        else None,
        steady={q.key: _stat([(m.rep, q.get(m)) for m in runs]) for q in STEADY}
        if is_steady
        else None,
        counters=_counters(runs),
        merge_failures={
            k: sum(f.get(k, 0) for f in failures)
            for k in dict.fromkeys(k for f in failures for k in f)
        }
        if failures
        else None,
        guest_reads=_guest_reads(runs, base),
        ksmd_visits=_visit_costs(runs),
    )


def _visit_costs(runs: list[ModeMetrics]) -> dict[str, KindCost] | None:
    timed = [m.ksmd_visits for m in runs if m.ksmd_visits is not None]
    if not timed:
        return None
    out: dict[str, KindCost] = {}
    for costs in timed:
        for kind, c in costs.items():
            out[kind] = out.get(kind, KindCost()) + c
    return {k: out[k] for k in KINDS if k in out}


def _all_modes(per_mode: dict[str, list[ModeMetrics]]) -> dict[str, ModeStats]:
    out = {}
    for mode, runs in per_mode.items():
        baseline = baseline_of(mode, per_mode)
        base = None if baseline is None else per_mode[baseline]
        out[mode] = _mode_stats(mode, runs, baseline, base)
    return out


def summarize(exp: Experiment) -> ExperimentStats:
    window = exp.steady_window_s
    per_mode = {mode: [metrics.compute(r, window) for r in runs] for mode, runs in exp.reps.items()}
    modes = _all_modes(per_mode)
    paced = None
    if any(m.below_pace for runs in per_mode.values() for m in runs):
        paced = _all_modes(
            {mode: [m for m in runs if not m.below_pace] for mode, runs in per_mode.items()}
        )
    return ExperimentStats(exp, modes, paced)


def metrics_json(stats: list[ExperimentStats]) -> dict[str, Any]:
    """metrics.json: numbers only, units in the field names."""
    return {
        "schema": SCHEMA,
        "statistic": {
            "summary": "median over repetitions",
            "interval": "percentile bootstrap of the median (n >= 3); [min, max] for n = 2; "
            "none for n = 1",
            "confidence": CONFIDENCE,
            "resamples": RESAMPLES,
            "seed": SEED,
            "ratios": "per repetition pair (rep i of the mode over rep i of its baseline_mode: "
            "its linear twin where the experiment ran one, e.g. ksm-nosmart for ksm++-nosmart, "
            "else ksm), then summarized",
            "never": "null in t50_s/t90_s: pages_sharing never held that share of the oracle",
            "steady_state": "steady scenarios: captured sharing (integral of pages_sharing over "
            "integral of the oracle) over each repetition's last window_s (its last half when "
            "shorter than twice the window); trend: Theil-Sen slope of captured sharing in "
            f"{steady.BIN_S:g} s bins over the window, per 10 minutes, with Sen's rank interval "
            f"at {steady.CONFIDENCE:.0%}; no downward trend when the interval's upper end >= 0 "
            f"or |slope| < {steady.TOLERANCE} per 10 minutes. headline_*: Sen's interval for one "
            "repetition, the median's interval over the repetitions' slopes for more",
            "counters": "diagnosis and other counter groups: growth over each repetition's "
            "measured run, median over repetitions",
            "guest_read_throughput": "real QEMU guests: MiB each guest's workload read from the "
            "shared disk per host second it took (command to DONE); a workload that did not "
            "finish is partial: what QEMU read for its guest from the shared disk (QMP "
            "query-blockstats rd_bytes) from its command to the run's end, over those seconds "
            "(partial_reps, by_guest_partial_reps, vs_ksm_partial_reps: the repetitions whose "
            "value is partial); all guests: their MiB over their seconds summed (none when a "
            "workload has no figure: unfinished_reps); vs_ksm_ratio per repetition pair like "
            "the other ratios. ksm++ modes run the collector, ksm modes do not, and ksmd also "
            "scans hinted pages in ksm++ modes: the ratio charges both",
        },
        "io_pace_ok_fraction": IO_PACE_OK,
        "experiments": [s.to_json() for s in stats],
    }

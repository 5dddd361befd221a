"""The figures people compare, for one repetition of one mode: captured
sharing, time to 50/90 % of the oracle, ksmd CPU, hint statistics, the load.
(pyksm.report.aggregate takes them over repetitions.)

- captured sharing = ∫ pages_sharing dt / ∫ oracle dt (trapezoids over the
  1 s samples): the share of all possible sharing over time that KSM got.
- t50 / t90: the time from which on pages_sharing stays at or above 50 % /
  90 % of the oracle at each moment (samples where the oracle is zero do not
  count); None if it is below at the end. Not the first time it got there: a
  mode that keeps up while little is shareable and falls behind later has
  not reached it.
- ksmd CPU: ksmd's utime+stime over the run, as % of one CPU; per scanned
  page (linear and hinted visits); per saved page (ksmd's CPU milliseconds
  over the run per page of mean sharing: what a page of saved memory cost,
  None when nothing was shared).
- ksmd CPU to reach a level (``cpu_to_reach``): ksmd's CPU seconds from the
  run's start to the first sample whose pages_sharing is at or above it. The
  report takes ksm's peak sharing as the level, per repetition pair: the CPU
  a mode spent to save what linear KSM saved at best.
- CPU by task: every party's CPU over the run, as % of one CPU (guests,
  collector, the runner's sampler and oracle, ksmd, idle of all CPUs).
- guest I/O: the lowest share of its set read rate a guest achieved (below
  IO_PACE_OK, 0.95, the guest was CPU-bound and the modes' workloads may
  differ: the repetition is flagged).
- idle / steal: the share of all CPUs' time that was idle / stolen by the
  hypervisor over the run (runs that recorded it).
- steady state (steady scenarios): captured sharing over the run's last
  window and its trend (pyksm.analysis.steady).
- diagnosis: how much the COW-break and hint-drop counters grew over the run
  (summary.json's, or from the first and last sample of a run cut short).
- failed merges by cause: hinted visits whose merge with a partner failed,
  by the kernel's cause (hint_pages_failed_<cause>), over the run: what the
  runner recorded in summary.json, else the first and last samples; None
  on a kernel without these counters.
- disk blocks (real QEMU guests, snapshot oracle): captured sharing of the
  pages holding a block of the guests' shared disk (∫ the guests' sharing
  among them dt / ∫ their opportunities dt), the share of those
  opportunities that lie across guests (per block, the guests holding it
  minus one; the rest are copies within one guest), and the captured
  sharing of that part. None for the ledger scenarios and for runs from
  before the split.
- guest read throughput (real QEMU guests): MiB each guest's workload read
  from the shared disk per host second it took (command to DONE), and over
  all guests their MiB over their seconds summed. A workload that did not
  finish is *partial* when QEMU's block statistics were read (the runner,
  over QMP): what its guest read from the command to the run's end over
  those seconds; it counts in the all-guests figure, and the guests whose
  figure is partial are kept (``guest_read_partial``) so that the report
  marks it. None for a workload without either figure (all guests: when any
  has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pyksm.analysis import steady as steady_
from pyksm.analysis.steady import SteadyState
from pyksm.experiment.results import IO_PACE_OK, Diagnosis, WorkloadOutcome
from pyksm.kernel.ksm import MergeFailures
from pyksm.probes.ksmd_visits import KindCost
from pyksm.report.dataset import ModeRun

MIB_PER_PAGE = 4096 / 2**20


@dataclass
class ModeMetrics:
    mode: str
    rep: int
    captured: float
    t50: float | None
    t90: float | None
    mean_sharing: float
    mean_oracle: float
    peak_oracle: float
    ksmd_cpu_pct: float
    pages_scanned: int
    hints_received: int
    hint_pages_scanned: int
    hint_pages_merged: int
    hints_dropped: int
    ksmd_us_per_page: float
    cpu_by_task: dict[str, float]
    io_achieved: float | None
    idle_fraction: float | None = None
    steal_fraction: float | None = None
    hint_visits: dict[str, int] | None = None
    # ksmd's visits by kind (--visit-cost); None: not timed.
    ksmd_visits: dict[str, KindCost] | None = None
    steady: SteadyState | None = None  # steady scenarios only
    diagnosis: Diagnosis | None = None
    merge_failures: dict[str, int] | None = None  # by cause, see MergeFailures
    # Real QEMU guests' read throughput, MiB/s (see the module docstring):
    # over all guests, and by guest (None: no workload recorded, the ledger scenarios).
    guest_read_mib_s: float | None = None
    guest_read_mib_s_by_guest: dict[str, float | None] | None = None
    # The guests whose figure is partial (unfinished, read until the run's end).
    guest_read_partial: tuple[str, ...] = ()
    # Disk blocks (see the module docstring).
    disk_share: float | None = None
    disk_captured: float | None = None
    disk_cross_share: float | None = None
    disk_cross_captured: float | None = None
    # Per sample: pages_sharing and ksmd's CPU seconds since the run's start
    # (for cpu_to_reach against another mode's level).
    sharing_curve: np.ndarray = field(
        default_factory=lambda: np.zeros(0), repr=False, compare=False
    )
    ksmd_cpu_s_curve: np.ndarray = field(
        default_factory=lambda: np.zeros(0), repr=False, compare=False
    )

    @property
    def ksmd_ms_per_saved_page(self) -> float | None:
        """ksmd's CPU ms over the run per page of mean sharing (None: none shared)."""
        if self.mean_sharing <= 0 or not self.ksmd_cpu_s_curve.size:
            return None
        return float(self.ksmd_cpu_s_curve[-1]) * 1e3 / self.mean_sharing

    @property
    def peak_sharing(self) -> float:
        return float(self.sharing_curve.max()) if self.sharing_curve.size else 0.0

    def cpu_to_reach(self, level: float) -> float | None:
        """See the module docstring (None: never reached)."""
        return cpu_to_reach(self.sharing_curve, self.ksmd_cpu_s_curve, level)

    @property
    def hint_pages_failed(self) -> int | None:
        """Failed hinted merges, all causes (None: not recorded)."""
        return None if self.merge_failures is None else sum(self.merge_failures.values())

    @property
    def mean_sharing_mib(self) -> float:
        return self.mean_sharing * MIB_PER_PAGE

    @property
    def mean_oracle_mib(self) -> float:
        return self.mean_oracle * MIB_PER_PAGE

    @property
    def below_pace(self) -> bool:
        """A guest read less than IO_PACE_OK of its set rate (CPU-bound)."""
        return self.io_achieved is not None and self.io_achieved < IO_PACE_OK


def _integral(y: np.ndarray, t: np.ndarray) -> float:
    if len(t) < 2:
        return 0.0
    return float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2)


def reach_time(t: np.ndarray, sharing: np.ndarray, oracle: np.ndarray, frac: float) -> float | None:
    """The time from which on sharing stays at or above ``frac`` of the oracle
    (samples with oracle only); None if it never does by the last sample."""
    idx = np.flatnonzero(oracle > 0)
    if not idx.size:
        return None
    short = np.flatnonzero(sharing[idx] < frac * oracle[idx])
    if not short.size:
        return float(t[idx[0]])
    if short[-1] + 1 == idx.size:
        return None
    return float(t[idx[short[-1] + 1]])


def cpu_to_reach(sharing: np.ndarray, cpu_s: np.ndarray, level: float) -> float | None:
    """ksmd CPU seconds at the first sample with sharing >= level; None if none."""
    hit = np.flatnonzero(sharing >= level)
    return float(cpu_s[hit[0]]) if hit.size else None


def time_to_fraction(run: ModeRun, frac: float) -> float | None:
    return reach_time(run.t, run.pages_sharing, run.oracle, frac)


def captured(t: np.ndarray, sharing: np.ndarray, oracle: np.ndarray) -> float:
    """∫ pages_sharing dt / ∫ oracle dt (trapezoids); 0 without oracle."""
    area = _integral(oracle, t)
    return _integral(sharing, t) / area if area else 0.0


def _counter_integral(run: ModeRun, name: str) -> float | None:
    if not run.rows or name not in run.rows[0].counters:
        return None
    return _integral(np.array([r.get(name, 0) for r in run.rows], dtype=float), run.t)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _file_area(run: ModeRun) -> float:
    """∫ disk-block opportunities dt."""
    return _integral(run.oracle_file, run.t) if run.rows else 0.0


def captured_file(run: ModeRun) -> float | None:
    """∫ the guests' sharing among disk-block pages dt / ∫ disk-block
    opportunities dt: captured sharing of what the reads created (the boot
    content both guests share is merged in the warm-up, in every mode)."""
    return _ratio(_counter_integral(run, "guests_sharing_file"), _file_area(run))


def disk_share(run: ModeRun) -> float | None:
    """∫ disk-block opportunities dt / ∫ all opportunities dt (None: no
    disk-block counters). The rest (boot content both guests share, merged
    in the warm-up in every mode) bounds the whole-RAM ratio between modes:
    a mode that holds all of it and no disk block captures 1 - this."""
    if not run.rows or "guests_sharing_file" not in run.rows[0].counters:
        return None
    return _ratio(_file_area(run), _integral(run.oracle, run.t))


def cross_share(run: ModeRun) -> float | None:
    """∫ disk-block opportunities across guests dt / ∫ all disk-block
    opportunities dt."""
    return _ratio(_counter_integral(run, "oracle_file_cross"), _file_area(run))


def captured_file_cross(run: ModeRun) -> float | None:
    """captured_file of the disk blocks across guests: what hints can reach."""
    return _ratio(
        _counter_integral(run, "guests_sharing_file_cross"),
        _counter_integral(run, "oracle_file_cross"),
    )


def diagnosis(run: ModeRun) -> Diagnosis | None:
    """The runner's, or from the first and last sample (a run cut short)."""
    if run.summary is not None and run.summary.diagnosis is not None:
        return run.summary.diagnosis
    if not run.rows:
        return None
    return Diagnosis.between(run.rows[0].counters, run.rows[-1].counters)


def merge_failures(run: ModeRun) -> dict[str, int] | None:
    """Failed hinted merges by cause over the run (see the module docstring)."""
    if run.summary and run.summary.merge_failures is not None:
        return dict(run.summary.merge_failures)
    if not run.rows:
        return None
    first = MergeFailures.from_counters(run.rows[0].counters)
    last = MergeFailures.from_counters(run.rows[-1].counters)
    return (last - first).as_dict() if first and last else None


def guest_reads(
    workloads: list[WorkloadOutcome],
) -> tuple[float | None, dict[str, float | None] | None]:
    """Read throughput (MiB/s) over all guests and by guest (see the module docstring)."""
    if not workloads:
        return None, None
    by_guest = {w.name: w.read_mib_s for w in workloads}
    if any(v is None for v in by_guest.values()):
        return None, by_guest
    seconds = sum(w.host_seconds or 0.0 for w in workloads)
    mib = sum(w.read_bytes or 0 for w in workloads) / 2**20
    return mib / seconds, by_guest


def compute(run: ModeRun, steady_window_s: float | None = None) -> ModeMetrics:
    """The figures of one repetition; the steady state too with a window."""
    duration = float(run.t[-1] - run.t[0]) if len(run.t) > 1 else 0.0
    # USER_HZ is 100 on every architecture pyksm runs on; a finished run says so.
    clk = float(run.summary.clk_tck if run.summary else 100)
    cpu = (run.ksmd_ticks[-1] / clk / duration * 100) if duration else 0.0
    dropped = sum(
        run.last(k) - run.first(k)
        for k in ("hints_dropped_overflow", "hints_dropped_age", "hints_dropped_stale")
    )
    scanned = run.last("pages_scanned") - run.first("pages_scanned")
    ticks = run.rows[-1].cpu_ticks if run.rows else {}
    by_task: dict[str, float] = {}
    if duration and ticks:
        guests = sum(v for k, v in ticks.items() if k.startswith("guest"))
        by_task = {
            k: v / clk / duration * 100 for k, v in ticks.items() if not k.startswith("guest")
        }
        by_task["guests"] = guests / clk / duration * 100
        by_task["idle"] = run.last("idle_ticks") / clk / duration * 100
    load = run.summary.load if run.summary else None
    workloads = run.summary.workloads if run.summary else []
    reads, reads_by_guest = guest_reads(workloads)
    return ModeMetrics(
        mode=run.mode,
        rep=run.rep,
        captured=captured(run.t, run.pages_sharing, run.oracle),
        t50=time_to_fraction(run, 0.5),
        t90=time_to_fraction(run, 0.9),
        mean_sharing=float(run.pages_sharing.mean()),
        mean_oracle=float(run.oracle.mean()),
        peak_oracle=float(run.oracle.max()),
        ksmd_cpu_pct=cpu,
        pages_scanned=scanned,
        hints_received=run.last("hints_received") - run.first("hints_received"),
        hint_pages_scanned=run.last("hint_pages_scanned") - run.first("hint_pages_scanned"),
        hint_pages_merged=run.last("hint_pages_merged") - run.first("hint_pages_merged"),
        hints_dropped=dropped,
        ksmd_us_per_page=run.ksmd_ticks[-1] / clk / scanned * 1e6 if scanned else 0.0,
        cpu_by_task=by_task,
        io_achieved=run.summary.io_pace if run.summary else None,
        idle_fraction=load.idle_fraction if load else None,
        steal_fraction=load.steal_fraction if load else None,
        hint_visits=run.summary.hint_visits if run.summary else None,
        ksmd_visits=run.summary.ksmd_visits if run.summary else None,
        steady=steady_.steady_state(run.t, run.pages_sharing, run.oracle, steady_window_s)
        if steady_window_s
        else None,
        diagnosis=diagnosis(run),
        merge_failures=merge_failures(run),
        guest_read_mib_s=reads,
        guest_read_mib_s_by_guest=reads_by_guest,
        guest_read_partial=tuple(w.name for w in workloads if w.partial),
        disk_share=disk_share(run),
        disk_captured=captured_file(run),
        disk_cross_share=cross_share(run),
        disk_cross_captured=captured_file_cross(run),
        sharing_curve=run.pages_sharing,
        ksmd_cpu_s_curve=run.ksmd_ticks / clk,
    )

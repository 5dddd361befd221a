"""Run one scenario inside the (patched) test kernel, once per mode and
repetition, sampling every second.
``python -m pyksm.experiment.runner SCENARIO OUTDIR [--repeat N] [options]``.

Modes (same seeded workload each time, KSM fully unmerged in between):
  ksm            linear KSM, smart_scan on (6.12's default), hints off
  ksm++          KSM++: the collector hints the guests' reads, smart_scan on
  ksm-nosmart    linear KSM, smart_scan off
  ksm++-nosmart  KSM++ with smart_scan off
  ksm-advisor    linear KSM with the scan-time advisor
  ksm++-advisor  KSM++ with the scan-time advisor
  ksm++-adaptive KSM++ with the collector's adaptive hint_interleave
  ksm++-advisor-adaptive  both: the advisor sets pages_to_scan, the
                 collector the share of it that goes to hints

A mode may carry its own scan rate, MODE@PAGES:MS (e.g. ksm@175:20): linear
KSM given the ksmd CPU that KSM++ used, to compare the two at equal cost.
A ksm++ mode that is not adaptive may carry a fixed hint_interleave,
MODE=H:L (e.g. ksm++=4:1, ksm++=4:1@100:20; every mode else runs at the
kernel's default 1:1), to compare the adaptive interleave with fixed ones.

With --repeat N every mode runs N times, interleaved: repetition r runs the
modes rotated by r - 1 (ksm, ksm++; then ksm++, ksm; ...), so a slow drift
of the machine's load hits every mode alike and each mode runs first as
often as the others (when N is a multiple of the number of modes).

Per mode and repetition it writes OUTDIR/SCENARIO/MODE/rep-NN/samples.jsonl
(one JSON per second) and summary.json (with the machine's load over the
run); OUTDIR/SCENARIO/config.json holds the full configuration and the order
the runs took.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from pyksm import __version__, argtypes
from pyksm.collect.process import CollectorProcess
from pyksm.control.interleave import Ratio, format_ratio, parse_ratio
from pyksm.deadline import wait_for
from pyksm.errors import PyksmError
from pyksm.experiment import guest, hintpairs, qemu_scenarios, scenarios
from pyksm.experiment.guest import make_image
from pyksm.experiment.oracle_ledger import LedgerOracle
from pyksm.experiment.results import (
    IO_PACE_OK,
    VMSTAT_COUNTERS,
    Diagnosis,
    Load,
    Sample,
    Summary,
    rep_dir,
)
from pyksm.kernel import ksm
from pyksm.probes import ksmd_visits
from pyksm.procfs import cpu_times, vmstat

MODES = (
    "ksm",
    "ksm++",
    "ksm-nosmart",
    "ksm++-nosmart",
    "ksm-advisor",
    "ksm++-advisor",
    "ksm++-adaptive",
    "ksm++-advisor-adaptive",
)
# Sampled every second: every read-only value, and pages_to_scan (the
# scan-time advisor changes it).
COUNTERS = (*ksm.STATS, "pages_to_scan")
# Warm-up before each mode's workload (see _warm_up).
WARM_ROUNDS = 2
WARM_PAGES = 4000
WARM_POLL_S = 0.01


@dataclass(frozen=True)
class ModeConfig:
    name: str
    hints: bool
    smart_scan: bool
    advisor: bool
    # The mode's own scan rate (MODE@PAGES:MS); None: the experiment's.
    scan_rate: tuple[int, int] | None = None
    # The collector sets hint_interleave from the kernel's backlog.
    adaptive: bool = False
    # A fixed hint_interleave (H, L) for the run (MODE=H:L); the kernel's 1:1 otherwise.
    interleave: Ratio = (1, 1)


@dataclass(frozen=True)
class Measured:
    """What a mode's measured run gives besides its samples."""

    t0: float  # time.monotonic() at its start
    load: Load


class RunCounters:
    """The counters one measured run is sampled and diagnosed by, for both
    runners (ledger guests here, real QEMU guests in qemu_runner).

    Made when the workloads are told to go: it reads the failed hinted merges
    by cause (``hint_pages_failed_*``, :class:`ksm.MergeFailures`) then.
    :meth:`read` gives one sample's counters, KSM's (``COUNTERS``) and
    /proc/vmstat's (``VMSTAT_COUNTERS``), and keeps the first and the last;
    :meth:`finish` gives the run's :class:`Diagnosis` (last sample minus
    first) and its failed merges by cause (now minus the start; None on a
    kernel without the counters), as summary.json keeps them.
    """

    def __init__(self, k: ksm.Ksm, mode: str) -> None:
        self.k = k
        self.mode = mode  # names the mode in its notes
        self.first: dict[str, int] | None = None
        self.last: dict[str, int] = {}
        self.failed0 = k.merge_failures()
        # The kernel's counters do not come and go: look for them once, not every second
        self.names = [c for c in COUNTERS if k.has(c)]

    def read(self) -> dict[str, int]:
        """KSM's counters and /proc/vmstat's now (a counter the kernel lacks is left out)."""
        state = {c: self.k.read_int(c) for c in self.names}
        state |= vmstat(VMSTAT_COUNTERS)
        if self.first is None:
            self.first = state
            if missing := [c for c in VMSTAT_COUNTERS if c not in state]:
                print(
                    f"  {self.mode:>14} note: no {', '.join(missing)} in /proc/vmstat "
                    "(CONFIG_VM_EVENT_COUNTERS off): COW breaks of KSM pages not counted",
                    flush=True,
                )
        self.last = state
        return state

    def grown(self, name: str) -> int:
        """How much a counter grew from the first read to the last (0: not counted)."""
        return self.last.get(name, 0) - (self.first or {}).get(name, 0)

    def finish(self) -> tuple[Diagnosis, dict[str, int] | None]:
        """The run's diagnosis and its failed hinted merges by cause (see the class)."""
        failed1 = self.k.merge_failures()
        failures = (failed1 - self.failed0).as_dict() if self.failed0 and failed1 else None
        if failures and any(failures.values()):
            print(f"  {self.mode:>14} failed hinted merges: {failures}", flush=True)
        return Diagnosis.between(self.first or {}, self.last), failures


@dataclass(frozen=True)
class Step:
    """One run of the plan: repetition ``rep`` (from 1) of mode ``mode``."""

    rep: int
    mode: str


def schedule(modes: list[str], repeat: int) -> list[Step]:
    """Repetition r runs the modes rotated left by r - 1: with two modes
    ksm, ksm++ | ksm++, ksm | ksm, ksm++ ... Every repetition holds every mode
    once, and over len(modes) repetitions each mode takes each place once."""
    if repeat < 1:
        raise PyksmError(f"--repeat {repeat}: must be at least 1")
    if not modes:
        raise PyksmError("no modes to run")
    if dupes := sorted({m for m in modes if modes.count(m) > 1}):
        raise PyksmError(f"mode {dupes[0]} is given twice")
    n = len(modes)
    return [Step(r + 1, modes[(r + i) % n]) for r in range(repeat) for i in range(n)]


def parse_scan_rate(text: str) -> tuple[int, int]:
    """ "PAGES:MILLISECONDS" -> (pages_to_scan, sleep_millisecs)."""
    pages, sep, ms = text.partition(":")
    try:
        if not sep:
            raise ValueError
        rate = int(pages), int(ms)
    except ValueError:
        raise PyksmError(f"scan rate {text!r} is not PAGES:MILLISECONDS (e.g. 100:20)") from None
    if rate[0] < 1 or rate[1] < 0:
        raise PyksmError(f"scan rate {text!r}: PAGES must be >= 1 and MILLISECONDS >= 0")
    if max(rate) > ksm.UINT_MAX:
        # ksm/pages_to_scan and ksm/sleep_millisecs are unsigned ints: the VM would refuse it.
        raise PyksmError(
            f"scan rate {text!r}: PAGES and MILLISECONDS must be at most {ksm.UINT_MAX}"
        )
    return rate


def mode_config(name: str) -> ModeConfig:
    """``MODE[=H:L][@PAGES:MS]`` -> its settings (see the module's docstring)."""
    head, at, rate = name.partition("@")
    base, eq, ratio = head.partition("=")
    if base not in MODES:
        raise PyksmError(f"unknown mode {base!r} (choose from {', '.join(MODES)})")
    hints, adaptive = base.startswith("ksm++"), "adaptive" in base
    if eq and (not hints or adaptive):
        raise PyksmError(
            f"mode {name!r}: only a ksm++ mode that is not adaptive takes a fixed =H:L"
        )
    return ModeConfig(
        name,
        hints,
        "nosmart" not in base,
        "advisor" in base,
        parse_scan_rate(rate) if at else None,
        adaptive,
        parse_ratio(ratio) if eq else (1, 1),
    )


def collector_args(pids: list[int], adaptive: bool = False) -> list[str]:
    """``pyksm collect`` arguments of the guests' hint collector (live mode)."""
    args = [a for pid in pids for a in ("-p", str(pid))]
    return [*args, "--adaptive-interleave"] if adaptive else args


def _reset(k: ksm.Ksm, cfg: ModeConfig, pages: int, sleep_ms: int) -> None:
    k.unmerge(timeout=120, then=2)
    k.write("sleep_millisecs", sleep_ms)
    if k.has("smart_scan"):
        k.write("smart_scan", cfg.smart_scan)
    if k.has("advisor_mode"):
        k.write("advisor_mode", "none")
    if k.has("hint_capacity"):
        k.write("hint_capacity", 4096 if cfg.hints else 0)
        # Every mode starts at its split (the kernel's default 1:1 unless
        # MODE=H:L), also after an adaptive collector that could not restore
        # it (SIGKILL).
        k.write("hint_interleave", format_ratio(cfg.interleave))
    elif cfg.hints:
        raise PyksmError("mode ksm++ needs the patched kernel (no ksm/hint_capacity)")


def _warm_up(k: ksm.Ksm, cfg: ModeConfig, pages: int, rounds: int = WARM_ROUNDS) -> float:
    """Let ksmd scan the booted guests for ``rounds`` full rounds, fast, then
    set the measured scan rate. On a host ksmd has been running long before
    a workload starts: every page has an rmap_item and a checksum, and the
    unstable tree is built each round. Starting cold would charge the first
    round's cheap, merge-free visits to linear KSM only. With no rounds,
    ksmd starts cold with the workload. Returns seconds."""
    t0 = time.monotonic()
    start = k.read_int("full_scans")
    k.write("pages_to_scan", WARM_PAGES if rounds else pages)
    k.write("run", 1)
    # Poll fast: each mode's measured round must start where the warm-up
    # ended, at the start of the list. At 4000 pages a batch, a 0.2 s poll
    # let ksmd run on by up to 15 % of a round, so the linear scan met the
    # workload at a different point in each mode.
    wait_for(
        lambda: k.read_int("full_scans") >= start + rounds,
        600,
        f"ksmd finishing {rounds} warm-up rounds",
        poll=WARM_POLL_S,
    )
    k.write("pages_to_scan", pages)
    if cfg.advisor and k.has("advisor_mode"):
        k.write("advisor_mode", "scan-time")
    return time.monotonic() - t0


def io_achieved(
    spec: scenarios.GuestSpec, stats: dict[str, int] | None, duration: float
) -> float | None:
    """Bytes a guest's workload read (page-cache hits included) over what its
    read rate asked for (None: no I/O). Below 1, the guest could not keep its
    pace (CPU-bound) and the modes' workloads may differ."""
    if spec.io == "none" or stats is None:
        return None
    asked = spec.read_mib_s * (1 << 20) * max(duration - spec.start_delay_s, 1e-9)
    return stats.get("served_bytes", stats["read_bytes"]) / asked


def _start_guests(
    stack: contextlib.ExitStack,
    scenario: scenarios.Scenario,
    cfg: ModeConfig,
    image: Path,
    ledgers: list[Path],
    duration: float,
) -> tuple[list[subprocess.Popen[str]], list[dict[str, Any]]]:
    """Start every guest process and wait for its boot line; each is reaped on exit."""
    guests: list[subprocess.Popen[str]] = []
    for i, spec in enumerate(scenario.guests):
        g = subprocess.Popen(
            guest.argv(spec, i, image, ledgers[i], scenario.seed, duration),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        stack.callback(_reap, g)
        guests.append(g)
    info = []
    for g in guests:
        assert g.stdout is not None
        line = g.stdout.readline()
        if not line:
            raise PyksmError(f"guest process {g.pid} died while booting")
        info.append(json.loads(line))
    return guests, info


def _reap(proc: subprocess.Popen[str], timeout: float = 10) -> None:
    """A guest still running when its mode ends (normally or not): its stdin
    closes (a guest stops at end of input), then it is killed after ``timeout``."""
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    if proc.poll() is None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stop_guests(guests: list[subprocess.Popen[str]]) -> list[dict[str, int] | None]:
    """Tell each guest to stop and read its statistics (None: it said nothing)."""
    stats = []
    for g in guests:
        _say(g.stdin, "")
        assert g.stdout is not None
        line = g.stdout.readline().strip()
        stats.append(json.loads(line) if line else None)
        g.wait(timeout=60)
    return stats


def progress_every(duration: float) -> int:
    """Seconds between progress lines: 10 s up to 10-minute runs, then one
    line per 1/60 of the run (20 s for 20 minutes), in tens of seconds."""
    return 10 * max(1, round(duration / 600))


def _measure(
    counters: RunCounters,
    cfg: ModeConfig,
    duration: float,
    oracle: LedgerOracle,
    guests: list[subprocess.Popen[str]],
    tasks: dict[str, int],
    samples_path: Path,
    tracer: hintpairs.HintTrace | None,
    history: hintpairs.LedgerHistory,
) -> Measured:
    """One Sample a second for ``duration`` seconds (samples are written as
    they come, nothing grows in memory; ``counters`` keeps the first and the
    last); returns when it started and how loaded all CPUs were meanwhile."""
    every = progress_every(duration)
    t0 = time.monotonic()
    cpu0 = _ticks(tasks)
    idle0 = ksm.idle_ticks()
    stat0 = cpu_times()
    next_t = t0
    last_print = -1
    with samples_path.open("w") as samples:
        while (now := time.monotonic()) - t0 <= duration:
            state = counters.read()
            o = oracle.sample(now - t0)
            now_ticks = _ticks(tasks)
            # A task that is gone (or was never read) is missing, not 0.
            cpu = {n: v - cpu0[n] for n, v in now_ticks.items() if n in cpu0}
            if tracer:
                history.record(now, state["full_scans"], oracle.last_parts)
            row = Sample(
                t=round(now - t0, 3),
                pages_sharing=state["pages_sharing"],
                ksmd_ticks=_need(cpu, "ksmd"),
                oracle=o.opportunities,
                oracle_file=o.file,
                oracle_anon=o.anon,
                present=o.present,
                idle_ticks=ksm.idle_ticks() - idle0,
                cpu_ticks=cpu,
                merging={str(g.pid): m for g in guests if (m := _merging(g.pid)) is not None},
                counters=state,
            )
            samples.write(row.to_json() + "\n")
            samples.flush()
            if int(now - t0) // every != last_print:
                last_print = int(now - t0) // every
                cow = counters.grown("cow_ksm")
                print(
                    f"  {cfg.name:>14} t={now - t0:5.0f}/{duration:.0f} s"
                    f"  pages_sharing={state['pages_sharing']:7d}  oracle={o.opportunities:7d}"
                    f"  hinted merges={state.get('hint_pages_merged', 0)}  COW-broken={cow}",
                    flush=True,
                )
            next_t += 1.0
            time.sleep(max(0.0, next_t - time.monotonic()))
    return Measured(t0, Load.since(t0, stat0))


def _io_warnings(
    scenario: scenarios.Scenario, cfg: ModeConfig, stats: list[dict[str, int] | None], secs: float
) -> list[float | None]:
    achieved = [
        io_achieved(spec, st, secs) for spec, st in zip(scenario.guests, stats, strict=True)
    ]
    for spec, a in zip(scenario.guests, achieved, strict=True):
        if a is not None and a < IO_PACE_OK:
            print(
                f"  {cfg.name:>14} warning: {spec.name} read {a:.0%} of its set rate "
                f"({spec.read_mib_s} MiB/s): CPU-bound, modes may not be comparable",
                flush=True,
            )
    return achieved


def run_mode(
    scenario: scenarios.Scenario,
    cfg: ModeConfig,
    out: Path,
    duration: float,
    pages: int,
    sleep_ms: int,
    image: Path,
    warm_rounds: int = WARM_ROUNDS,
    trace_hints: bool = False,
    rep: int | None = None,
    visit_cost: bool = False,
) -> Summary:
    """One mode (one repetition of it, ``rep``): reset KSM, boot the guests, (collector,) warm up, measure, summarise.

    Every guest, the collector, the hint tracer and the ledger files are
    released on every path (an ExitStack), a guest dying at boot or an
    exception in the warm-up included.
    """
    k = ksm.Ksm()
    if cfg.scan_rate:
        pages, sleep_ms = cfg.scan_rate
    _reset(k, cfg, pages, sleep_ms)
    out.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    ledgers = [shm / f"pyksm-ledger-{cfg.name}-{i}.bin" for i in range(len(scenario.guests))]
    with contextlib.ExitStack() as stack:
        for ledger in ledgers:
            stack.callback(ledger.unlink, missing_ok=True)
        guests, info = _start_guests(stack, scenario, cfg, image, ledgers, duration)
        collector = None
        if cfg.hints:
            collector = stack.enter_context(
                CollectorProcess(
                    collector_args([g.pid for g in guests], cfg.adaptive),
                    out / "collector.log",
                    stats=False,
                )
            )
        oracle = LedgerOracle(ledgers)
        # Compiled before the warm-up (a minute under TCG), counted after it.
        timer = None
        if visit_cost:
            timer = stack.enter_context(ksmd_visits.VisitTimer())
            # On a failure: detached between ksmd's batches, before the timer's own exit.
            stack.callback(_close_timer, k, timer)
        # ksmd warms up after the collector's attach (bcc compiles for a minute
        # or more under TCG): before it, ksmd would run longer in ksm++ modes.
        warm_s = _warm_up(k, cfg, pages, warm_rounds)
        print(f"  {cfg.name:>14} warm-up: {warm_rounds} rounds in {warm_s:.0f} s", flush=True)
        tracer = None
        history = hintpairs.LedgerHistory()
        if trace_hints and cfg.hints:
            tracer = hintpairs.HintTrace()
            if not tracer.available():
                raise PyksmError(f"--trace-hints: no tracefs {hintpairs.EVENT} in this kernel")
            tracer.start()
            stack.callback(_stop_tracer, tracer)
        if timer:
            timer.reset()  # the measured run's visits only, not the warm-up's
        counters = RunCounters(k, cfg.name)
        for g in guests:
            _say(g.stdin, "go")
        # CPU time of every party, so a run shows where the (virtual) CPUs went
        # and whether the workload had the CPU it asked for.
        tasks = {"ksmd": ksm.ksmd_pid(), "runner": os.getpid()}
        tasks |= {spec.name: g.pid for spec, g in zip(scenario.guests, guests, strict=True)}
        if collector:
            tasks["collector"] = collector.pid
        measured = _measure(
            counters, cfg, duration, oracle, guests, tasks, out / "samples.jsonl", tracer, history
        )
        t0 = measured.t0
        diagnosis, failures = counters.finish()
        visits: list[hintpairs.Visit] = []
        lost = 0
        if tracer:
            visits, lost = tracer.stop()
        costs = _between_batches(k, timer.stop) if timer else None
        if collector:
            try:
                collector.interrupt(timeout=30)
            except PyksmError as e:
                print(f"  {cfg.name:>14} warning: {e}", flush=True)
        guest_stats = _stop_guests(guests)
    elapsed = time.monotonic() - t0
    summary = Summary(
        mode=cfg.name,
        config=asdict(cfg),
        guests=info,
        guest_stats=guest_stats,
        io_achieved=_io_warnings(scenario, cfg, guest_stats, min(elapsed, duration)),
        scan_rate={"pages_to_scan": pages, "sleep_millisecs": sleep_ms},
        warm_up={"rounds": warm_rounds, "pages_to_scan": WARM_PAGES, "seconds": warm_s},
        lifetimes=oracle.histogram(time.monotonic() - t0),
        clk_tck=os.sysconf("SC_CLK_TCK"),
        cpus=os.cpu_count(),
        rep=rep,
        load=measured.load,
        diagnosis=diagnosis,
        merge_failures=failures,
        ksmd_visits=costs,
    )
    if tracer:
        rams = [(int(x["ram"][0]), int(x["ram"][1])) for x in info]
        counts = hintpairs.classify(history, visits, rams)
        summary.hint_visits = {**counts, "traced": len(visits), "lost": lost}
        print(f"  {cfg.name:>14} hinted visits: {dict(counts)} (lost {lost})", flush=True)
    (out / "summary.json").write_text(summary.to_json())
    return summary


_T = TypeVar("_T")


def _between_batches(k: ksm.Ksm, detach: Callable[[], _T]) -> _T:
    """Call ``detach`` (kretprobes of ksmd's functions going away) while ksmd
    is between batches, then restore ``run``. Writing ``run`` takes
    ksm_thread_mutex, which ksmd holds for a whole batch, so no probed call is
    in flight once ``run`` is 0: a kretprobe removed under a visit that slept
    crashed ksmd once (6.12.117 under TCG; returned to address 0)."""
    try:
        run = k.read_int("run")
        k.write("run", 0)
    except PyksmError as e:  # detach anyway: leaving the probes is worse
        print(f"  warning: could not pause ksmd before detaching its probes: {e}", flush=True)
        return detach()
    try:
        return detach()
    finally:
        k.write("run", run)


def _close_timer(k: ksm.Ksm, timer: ksmd_visits.VisitTimer) -> None:
    """Detach the visit timer if a failure left it attached."""
    if timer.running:
        _between_batches(k, timer.close)


def _stop_tracer(tracer: hintpairs.HintTrace) -> None:
    """Detach the hint tracer if a failure left it running."""
    if tracer.running:
        tracer.stop()


def _say(pipe: IO[str] | None, text: str) -> None:
    if pipe is None:
        return
    try:
        pipe.write(text + "\n")
        pipe.flush()
    except BrokenPipeError:
        pass


def _merging(pid: int) -> int | None:
    """/proc/PID/ksm_merging_pages; None when it cannot be read (gone, no such file)."""
    try:
        return int(Path(f"/proc/{pid}/ksm_merging_pages").read_text())
    except (OSError, ValueError):
        return None


def _need(cpu: dict[str, int], task: str) -> int:
    if task not in cpu:
        raise PyksmError(f"cannot read the CPU time of {task}")
    return cpu[task]


def _ticks(tasks: dict[str, int]) -> dict[str, int]:
    """CPU ticks of each task that can be read now."""
    return {n: t for n, pid in tasks.items() if (t := ksm.cpu_ticks(pid)) is not None}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("scenario", choices=scenarios.names())
    p.add_argument("outdir", type=Path)
    p.add_argument("--modes", default="ksm,ksm++")
    p.add_argument("--duration", type=argtypes.checked(scenarios.parse_duration), default=None)
    p.add_argument("--scan-rate", default="100:20", help="PAGES:MILLISECONDS")
    p.add_argument("--warm-up", type=int, default=WARM_ROUNDS, help="ksmd rounds before go")
    p.add_argument("--trace-hints", action="store_true", help="classify hinted visits")
    p.add_argument("--visit-cost", action="store_true", help="time ksmd's visits by kind")
    p.add_argument(
        "--repeat", type=argtypes.positive_int, default=1, help="runs of every mode, interleaved"
    )
    p.add_argument(
        "--guest-image", type=Path, default=None, help="qemu-* scenarios: the saved guest image"
    )
    for flag in ("--guest-memory", "--ballast-mib", "--disk-mib"):
        p.add_argument(flag, type=argtypes.nonneg_int, default=None, help="qemu-* scenarios: MiB")
    a = p.parse_args()
    sc = sized(
        scenarios.lookup(a.scenario),
        qemu_scenarios.QemuSizes(a.guest_memory, a.ballast_mib, a.disk_mib),
    )
    duration = sc.duration_s if a.duration is None else a.duration
    pages, ms = parse_scan_rate(a.scan_rate)
    modes = {m: mode_config(m) for m in a.modes.split(",")}
    plan = schedule(list(modes), a.repeat)
    base = a.outdir / sc.name
    base.mkdir(parents=True, exist_ok=True)
    run_step = _step_runner(sc, a, duration, pages, ms)
    k = ksm.Ksm()
    config = {
        "scenario": sc.to_dict(),
        "modes": list(modes),
        "repeat": a.repeat,
        "order": [[s.rep, s.mode] for s in plan],
        "duration_s": duration,
        "pages_to_scan": pages,
        "sleep_millisecs": ms,
        "warm_up_rounds": a.warm_up,
        "trace_hints": a.trace_hints,
        "visit_cost": a.visit_cost,
        "oracle": "ledger" if isinstance(sc, scenarios.Scenario) else "snapshot",
        "pyksm": __version__,
        "kernel": platform.release(),
        "ksm_knobs_before": k.state(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (base / "config.json").write_text(json.dumps(config, indent=1))
    for i, step in enumerate(plan, 1):
        print(
            f"running {sc.name} / {step.mode} for {duration:.0f} s "
            f"(repetition {step.rep} of {a.repeat}, run {i} of {len(plan)})",
            flush=True,
        )
        run_step(modes[step.mode], rep_dir(base, step.mode, step.rep), step.rep)
    (base / "complete").write_text("ok\n")
    return 0


def sized(
    sc: scenarios.Scenario | qemu_scenarios.QemuScenario, sizes: qemu_scenarios.QemuSizes
) -> scenarios.Scenario | qemu_scenarios.QemuScenario:
    """A real-QEMU scenario with ``sizes`` in place of its own; the ledger
    scenarios take none."""
    if isinstance(sc, scenarios.Scenario):
        if sizes.given:
            flags = " ".join(sizes.args()[::2])
            raise PyksmError(f"{flags}: for real-QEMU scenarios only, not {sc.name}")
        return sc
    return qemu_scenarios.sized(sc, sizes)


def refuse_for_real_qemu(
    scenario: str, *, trace_hints: bool, visit_cost: bool, icount: bool = False
) -> None:
    """--trace-hints and --visit-cost watch the ledger guests' runs only;
    --clock icount would run nested guests on one instruction-counted vCPU."""
    flags = (
        ("--trace-hints", trace_hints),
        ("--visit-cost", visit_cost),
        ("--clock icount", icount),
    )
    for flag, on in flags:
        if on:
            raise PyksmError(f"{flag}: not for real-QEMU scenarios ({scenario})")


def _step_runner(
    sc: scenarios.Scenario | qemu_scenarios.QemuScenario,
    a: argparse.Namespace,
    duration: float,
    pages: int,
    ms: int,
) -> Callable[[ModeConfig, Path, int], Summary]:
    """How one step (mode, repetition) of ``sc`` runs: ledger guests here,
    real QEMU guests in qemu_runner."""
    if not isinstance(sc, scenarios.Scenario):
        # imported here: qemu_runner builds on this module
        from pyksm.experiment import qemu_runner
        from pyksm.experiment.oracle_snapshot import disk_hashes, prepare
        from pyksm.lab.guest_image import GuestImage

        if a.guest_image is None:
            raise PyksmError(f"scenario {sc.name} needs --guest-image (pyksm experiment run)")
        refuse_for_real_qemu(sc.name, trace_hints=a.trace_hints, visit_cost=a.visit_cost)
        guest_image = GuestImage.load(a.guest_image)
        t0 = time.monotonic()
        disk = disk_hashes(guest_image.disk.path)
        prepare()
        print(
            f"snapshot oracle: {disk.size} distinct disk blocks hashed, analysis compiled "
            f"in {time.monotonic() - t0:.0f} s",
            flush=True,
        )
        qsc = sc
        return lambda cfg, out, rep: qemu_runner.run_mode(
            qsc, cfg, out, duration, pages, ms, guest_image, disk, a.warm_up, rep
        )
    image = Path("/tmp") / f"pyksm-image-{sc.image_mib}.img"
    make_image(image, sc.image_mib)
    lsc = sc
    return lambda cfg, out, rep: run_mode(
        lsc,
        cfg,
        out,
        duration,
        pages,
        ms,
        image,
        a.warm_up,
        a.trace_hints,
        rep,
        visit_cost=a.visit_cost,
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PyksmError as e:  # one line in the VM's output, no traceback
        print(f"runner: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr, flush=True)
        sys.exit(2)

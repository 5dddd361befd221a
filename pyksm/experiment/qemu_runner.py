"""One mode of a real-QEMU scenario (``qemu_scenarios.py``), inside the test VM.

Called by ``pyksm.experiment.runner`` for the qemu-* scenarios, with the
same modes, warm-up, 1 s samples and results files as the ledger scenarios:

1. KSM is reset for the mode (``runner._reset``); the ballast (a QEMU-like
   process of unique mergeable memory, guest.py with no I/O) starts, then
   the guests boot the guest image to the agent's READY, all at once
   (nested TCG: the boot times are measured and kept; each boot has the
   scenario's deadline);
2. in ksm++ modes ``pyksm collect --qemu`` attaches (deadline as the ledger
   scenarios' collector); ksmd warms up;
3. the snapshot oracle starts, the guests' workloads start (each on a
   thread that drives its guest's serial line; guest-b a few seconds later),
   and a sample is written every second for the run's duration; its
   counters diagnose the run as the ledger scenarios' (``runner.RunCounters``:
   COW breaks of KSM pages, hints dropped by reason, failed hinted merges by
   cause, into summary.json);
4. the oracle stops and validates; the collector is interrupted; the
   workloads get a grace period to finish, then their guests are powered off
   (or killed), the ballast is stopped.

A workload that finished has the agent's figures (bytes its guest read,
command to DONE). Under nested TCG a workload often does not finish within
the run: each guest serves QMP on a socket of its own, and QEMU's bytes
read from the shared disk (query-blockstats rd_bytes) are taken just before
the command is sent and at the run's end, so an unfinished workload's
outcome is *partial*: those bytes over the seconds between the two. Without
QMP, or when a query fails (each step within QMP_TIMEOUT_S), it simply has
no figure.

A sample's ``pages_sharing`` is the kernel's sharing among the guests' pages
and ``oracle`` the opportunities, both from the last snapshot (the machine's
pages_sharing is kept as ``sysfs_pages_sharing``, the sharing among pages
holding disk blocks as ``guests_sharing_file``, beside ``oracle_file``), so
the report's captured sharing is ∫ kernel sharing dt / ∫ opportunities dt here, as it is
∫ pages_sharing dt / ∫ oracle dt for the ledger scenarios. Every QEMU, the
ballast, the collector, the oracle thread, the QMP sockets' directory and
the ledger file are released on every path (one ExitStack); a QMP query's
connection is closed before it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pyksm.collect import qmp
from pyksm.collect.process import CollectorProcess
from pyksm.errors import PyksmError
from pyksm.experiment import guest, qemu_guest
from pyksm.experiment.oracle_snapshot import SnapshotOracle
from pyksm.experiment.qemu_scenarios import QemuGuestSpec, QemuScenario
from pyksm.experiment.results import (
    AGENT,
    BLOCKSTATS,
    IO_PACE_OK,
    Load,
    Sample,
    Summary,
    WorkloadOutcome,
)
from pyksm.experiment.runner import (
    WARM_PAGES,
    ModeConfig,
    RunCounters,
    _merging,
    _need,
    _reap,
    _reset,
    _say,
    _ticks,
    _warm_up,
)
from pyksm.experiment.scenarios import GuestSpec
from pyksm.kernel import ksm
from pyksm.lab.guest_image import GuestImage
from pyksm.procfs import cpu_times

__all__ = ["collector_args", "run_mode"]

COLLECTOR_READY_S = 900.0  # bcc compiles for minutes under TCG with a guest busy
WORKLOAD_GRACE_S = 120.0  # after the run, for a workload to report DONE
QMP_TIMEOUT_S = 5.0  # each step of a QMP query (connect, greeting, command)
BALLAST_STOP_S = 60.0


def collector_args(adaptive: bool) -> list[str]:
    """``pyksm collect`` arguments for real guests: every QEMU, also later ones."""
    return ["--qemu", *(["--adaptive-interleave"] if adaptive else [])]


def ballast_spec(mib: int) -> GuestSpec:
    """Unique mergeable memory: a QEMU-like process that reads and writes nothing."""
    return GuestSpec(name="ballast", ram_mib=mib, cache_mib=0, heap_mib=0, io="none")


@dataclass(frozen=True)
class _DiskReads:
    """What QEMU has read for its guest from the shared disk (QMP
    query-blockstats rd_bytes) at host time ``t`` (time.monotonic())."""

    t: float
    rd_bytes: int


class _Workload(threading.Thread):
    """One guest's workload: wait its start delay, run it, keep the outcome.

    With the guest's QMP socket, QEMU's bytes read from the shared disk are
    read just before the command is sent and, while no DONE has come, at the
    run's end (``mark_run_end``): a workload that does not finish still has
    what it read until then (``result``)."""

    def __init__(self, g: qemu_guest.Guest, spec: QemuGuestSpec, duration: float) -> None:
        super().__init__(name=f"workload-{spec.name}", daemon=True)
        self.guest = g
        self.spec = spec
        self.work = spec.command(duration)
        self.timeout = duration + WORKLOAD_GRACE_S
        self.cancel = threading.Event()
        self.outcome = WorkloadOutcome(spec.name, self.work.command(), done=False)
        self.at_command: _DiskReads | None = None
        self.at_run_end: _DiskReads | None = None
        self.qmp_error: str | None = None  # why there is no partial figure
        self._qmp = threading.Lock()  # QEMU serves one QMP client at a time

    def _disk_reads(self) -> _DiskReads | None:
        """QEMU's bytes read from the shared disk now; None without a QMP
        socket or when the query fails (within QMP_TIMEOUT_S per step)."""
        if self.guest.qmp is None:
            self.qmp_error = "no QMP socket"
            return None
        with self._qmp:
            try:
                rd = qmp.block_read_bytes(str(self.guest.qmp), timeout=QMP_TIMEOUT_S)
            except PyksmError as e:
                self.qmp_error = str(e)
                return None
            return _DiskReads(time.monotonic(), rd)

    def run(self) -> None:
        if self.cancel.wait(self.spec.start_delay_s):
            return
        self.at_command = self._disk_reads()
        try:
            r = self.guest.run(self.work, timeout=self.timeout)
        except (PyksmError, OSError, ValueError) as e:  # ValueError: its pipe was closed
            self.outcome.error = str(e)
            return
        self.outcome = WorkloadOutcome(
            self.spec.name,
            r.command,
            True,
            r.done.status,
            r.done.files,
            r.done.read_bytes,
            round(r.host_seconds, 6),  # to the µs: a fast reply is not 0 s
            read_bytes_source=AGENT,
        )

    def mark_run_end(self) -> None:
        """The run's end: QEMU's bytes read now, for a workload that was sent
        and is still waiting for its DONE."""
        if self.at_command is not None and self.is_alive() and not self.outcome.done:
            self.at_run_end = self._disk_reads()

    def result(self) -> WorkloadOutcome:
        """The outcome once the thread ended: the agent's figures when DONE
        came; else partial, from the command to the run's end, when QEMU's
        bytes read are known at both; else no figures."""
        out = self.outcome
        start, end = self.at_command, self.at_run_end
        if out.done or start is None or end is None:
            return out
        return replace(
            out,
            read_bytes=end.rd_bytes - start.rd_bytes,
            host_seconds=round(end.t - start.t, 6),
            read_bytes_source=BLOCKSTATS,
        )

    def reads_words(self, o: WorkloadOutcome) -> str:
        """What ``o`` (its ``result``, no DONE) says of what its guest read."""
        if o.partial:
            return (
                f"partial: {(o.read_bytes or 0) / 2**20:.1f} MiB in {o.host_seconds:.1f} s to "
                f"the run's end, {o.read_mib_s or 0:.2f} MiB/s (QEMU's block statistics)"
            )
        if self.qmp_error:
            why = self.qmp_error
        elif self.at_command is None:
            why = "its command was not sent"
        else:
            why = "it ended before the run did"
        return f"no read figure ({why})"


def io_achieved(spec: QemuGuestSpec, out: WorkloadOutcome) -> float | None:
    """A paced reader's rate (files over the host seconds its workload took,
    the file list's setup included) over its set rate; 0 when it never
    finished; None for an unpaced workload."""
    if spec.workload != "random" or not spec.files_per_s:
        return None
    if not out.done or not out.host_seconds:
        return 0.0
    return (out.files or 0) / out.host_seconds / spec.files_per_s


def _start_ballast(
    stack: contextlib.ExitStack, sc: QemuScenario, cfg: ModeConfig, disk: Path, duration: float
) -> tuple[subprocess.Popen[str] | None, dict[str, Any] | None]:
    if not sc.ballast_mib:
        return None, None
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
    ledger = shm / f"pyksm-ballast-{cfg.name}.bin"
    stack.callback(ledger.unlink, missing_ok=True)
    proc = subprocess.Popen(
        guest.argv(ballast_spec(sc.ballast_mib), 0, disk, ledger, sc.seed, duration),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.callback(_reap, proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise PyksmError(f"ballast process {proc.pid} died while filling its memory")
    info: dict[str, Any] = json.loads(line)
    return proc, info


def _stop_ballast(proc: subprocess.Popen[str] | None) -> dict[str, Any] | None:
    """Its statistics line (it stops at end of input), within BALLAST_STOP_S."""
    if proc is None:
        return None
    try:
        out, _ = proc.communicate("\n", timeout=BALLAST_STOP_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        print(f"  warning: the ballast did not stop within {BALLAST_STOP_S:.0f} s", flush=True)
        return None
    lines = [ln for ln in out.splitlines() if ln.strip()]
    stats: dict[str, Any] | None = json.loads(lines[-1]) if lines else None
    return stats


def _boot_all(
    stack: contextlib.ExitStack, sc: QemuScenario, image: GuestImage, out: Path
) -> list[qemu_guest.Guest]:
    """Boot every guest at once (one thread each: under nested TCG a boot
    takes minutes of one CPU). Each boot has the scenario's deadline; every
    guest that booted is closed on exit, also when another did not boot.
    Each guest's serial console goes to ``out/<name>.console.log``; each
    serves QMP on ``<name>.qmp`` in a directory of its own (short: a unix
    socket's path has at most 107 bytes), removed after the guests."""
    got: list[qemu_guest.Guest | PyksmError | None] = [None] * len(sc.guests)
    sockets = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pyksm-qmp-")))

    def boot(i: int, spec: QemuGuestSpec) -> None:
        try:
            got[i] = qemu_guest.Guest.of_image(
                image,
                sc.drive,
                boot_timeout=sc.boot_timeout_s,
                memory_mib=spec.memory_mib,
                nice=sc.guest_nice,
                console_log=out / f"{spec.name}.console.log",
                qmp=sockets / f"{spec.name}.qmp",
            )
        except PyksmError as e:
            got[i] = PyksmError(
                f"{spec.name} did not boot: {e}", hint=f"console: {out / spec.name}.console.log"
            )

    threads = [
        threading.Thread(target=boot, args=(i, spec), name=f"boot-{spec.name}", daemon=True)
        for i, spec in enumerate(sc.guests)
    ]
    for t in threads:
        t.start()
    end = time.monotonic() + sc.boot_timeout_s + 60  # Guest's own deadline comes first
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    guests = [g for g in got if isinstance(g, qemu_guest.Guest)]
    for g in guests:
        stack.callback(g.close)
    for spec, r in zip(sc.guests, got, strict=True):
        if isinstance(r, PyksmError):
            raise r
        if r is None:
            raise PyksmError(f"{spec.name} did not boot within {sc.boot_timeout_s:g} s")
    return guests


def _stop_workloads(work: list[_Workload], deadline: float) -> None:
    """Let the workloads finish by ``deadline``; then kill their guests (a
    workload still waiting for DONE sees its guest's console end and ends;
    the guest is reaped and its pipes closed where it was booted)."""
    for w in work:
        w.cancel.set()  # one still in its start delay does not start now
        w.join(max(0.0, deadline - time.monotonic()))
    for w in work:
        if w.is_alive():
            print(f"  warning: {w.spec.name}'s {w.outcome.command!r} did not finish", flush=True)
            with contextlib.suppress(OSError):
                w.guest.proc.kill()
            w.join(30)


def _measure(
    counters: RunCounters,
    cfg: ModeConfig,
    duration: float,
    oracle: SnapshotOracle,
    pids: list[int],
    tasks: dict[str, int],
    samples_path: Path,
    t0: float,
) -> Load:
    """One Sample a second for ``duration`` s from ``t0`` (``counters`` keeps
    the first and the last); how loaded the CPUs were."""
    cpu0 = _ticks(tasks)
    idle0 = ksm.idle_ticks()
    stat0 = cpu_times()
    next_t = t0
    last_print = -1
    with samples_path.open("w") as samples:
        while (now := time.monotonic()) - t0 <= duration:
            oracle.check()
            state = counters.read()
            o = oracle.latest
            cpu = {n: v - cpu0[n] for n, v in _ticks(tasks).items() if n in cpu0}
            row = Sample(
                t=round(now - t0, 3),
                pages_sharing=o.kernel_sharing if o else 0,
                ksmd_ticks=_need(cpu, "ksmd"),
                oracle=o.opportunities if o else 0,
                oracle_file=o.file if o else 0,
                oracle_anon=o.anon if o else 0,
                present=o.present if o else 0,
                idle_ticks=ksm.idle_ticks() - idle0,
                cpu_ticks=cpu,
                merging={str(p): m for p in pids if (m := _merging(p)) is not None},
                counters={
                    **state,
                    "sysfs_pages_sharing": state["pages_sharing"],
                    "guests_sharing_file": o.file_sharing if o else 0,
                    "guests_sharing_file_cross": o.file_cross_sharing if o else 0,
                    "oracle_file_cross": o.file_cross if o else 0,
                },
            )
            samples.write(row.to_json() + "\n")
            samples.flush()
            if int(now - t0) // 10 != last_print:
                last_print = int(now - t0) // 10
                print(
                    f"  {cfg.name:>14} t={now - t0:5.0f} s  guests' sharing={row.pages_sharing:7d}"
                    f"  oracle={row.oracle:7d}  (snapshot at t={o.t if o else 0:.0f} s, "
                    f"{o.seconds if o else 0:.1f} s)  hinted merges="
                    f"{state.get('hint_pages_merged', 0)}",
                    flush=True,
                )
            next_t += 1.0
            time.sleep(max(0.0, next_t - time.monotonic()))
    return Load.since(t0, stat0)


def run_mode(
    sc: QemuScenario,
    cfg: ModeConfig,
    out: Path,
    duration: float,
    pages: int,
    sleep_ms: int,
    image: GuestImage,
    disk_hashes: npt.NDArray[np.uint64],
    warm_rounds: int,
    rep: int | None = None,
) -> Summary:
    """One repetition of one mode of ``sc`` (see the module's steps)."""
    k = ksm.Ksm()
    if cfg.scan_rate:
        pages, sleep_ms = cfg.scan_rate
    _reset(k, cfg, pages, sleep_ms)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        ballast, ballast_info = _start_ballast(stack, sc, cfg, image.disk.path, duration)
        boot_t0 = time.monotonic()
        guests = _boot_all(stack, sc, image, out)
        boot_wall = time.monotonic() - boot_t0
        print(
            f"  {cfg.name:>14} guests booted in {boot_wall:.1f} s: "
            + ", ".join(
                f"{spec.name} {g.boot_seconds:.1f} s (pid {g.pid})"
                for spec, g in zip(sc.guests, guests, strict=True)
            ),
            flush=True,
        )
        info = [
            {
                "name": spec.name,
                "pid": g.pid,
                "memory_mib": spec.memory_mib,
                "boot_seconds": round(g.boot_seconds, 3),
                "ram": [list(r) for r in qemu_guest.guest_ram(g.pid, spec.memory_mib)],
                "kernel": g.ready.kernel if g.ready else "",
            }
            for spec, g in zip(sc.guests, guests, strict=True)
        ]
        if ballast_info is not None:
            info.append({"name": "ballast", **ballast_info, "memory_mib": sc.ballast_mib})
        collector = None
        if cfg.hints:
            collector = stack.enter_context(
                CollectorProcess(
                    collector_args(cfg.adaptive),
                    out / "collector.log",
                    timeout=COLLECTOR_READY_S,
                    stats=False,
                )
            )
        warm_s = _warm_up(k, cfg, pages, warm_rounds)
        print(f"  {cfg.name:>14} warm-up: {warm_rounds} rounds in {warm_s:.0f} s", flush=True)
        pids = [g.pid for g in guests]
        oracle = SnapshotOracle(pids, sc.snapshot_interval_s, disk_hashes)
        stack.callback(_quiet_stop, oracle)
        work = [_Workload(g, spec, duration) for g, spec in zip(guests, sc.guests, strict=True)]
        counters = RunCounters(k, cfg.name)
        t0 = time.monotonic()
        oracle.start(t0)
        for w in work:
            w.start()
        # on a failure: no workload thread outlives its guest
        stack.callback(_stop_workloads, work, 0.0)
        _say(ballast.stdin if ballast else None, "go")
        tasks = {"ksmd": ksm.ksmd_pid(), "runner": os.getpid()}
        tasks |= {spec.name: g.pid for spec, g in zip(sc.guests, guests, strict=True)}
        if ballast:
            tasks["ballast"] = ballast.pid
        if collector:
            tasks["collector"] = collector.pid
        all_pids = [*pids, *([ballast.pid] if ballast else [])]
        load = _measure(counters, cfg, duration, oracle, all_pids, tasks, out / "samples.jsonl", t0)
        for w in work:
            w.mark_run_end()
        diagnosis, failures = counters.finish()
        oracle.stop()
        oracle.check()
        lifetimes, validation = oracle.finish(sc.long_lived_s)
        if collector:
            try:
                collector.interrupt(timeout=30)
            except PyksmError as e:
                print(f"  {cfg.name:>14} warning: {e}", flush=True)
        _stop_workloads(work, time.monotonic() + WORKLOAD_GRACE_S)
        ballast_stats = _stop_ballast(ballast)
    outcomes = [w.result() for w in work]
    achieved = [io_achieved(s, o) for s, o in zip(sc.guests, outcomes, strict=True)]
    for w, o, a in zip(work, outcomes, achieved, strict=True):
        if o.error:
            print(f"  {cfg.name:>14} warning: {o.name}: {o.error}", flush=True)
            print(f"  {cfg.name:>14} {o.name}: {w.reads_words(o)}", flush=True)
        elif a is not None and a < IO_PACE_OK:
            print(
                f"  {cfg.name:>14} warning: {o.name} read at {a:.0%} of its set rate: "
                "CPU-bound, modes may not be comparable",
                flush=True,
            )
    recall = validation["long_lived_recall"]
    print(
        f"  {cfg.name:>14} oracle: {validation['snapshots']} snapshots, "
        f"{validation['snapshot_seconds_mean']} s each; precision {validation['precision']:.4f}"
        f", long-lived recall {'n/a' if recall is None else format(recall, '.3f')}",
        flush=True,
    )
    summary = Summary(
        mode=cfg.name,
        config=asdict(cfg),
        guests=info,
        guest_stats=[*(asdict(o) for o in outcomes), *([ballast_stats] if ballast_stats else [])],
        io_achieved=achieved,
        scan_rate={"pages_to_scan": pages, "sleep_millisecs": sleep_ms},
        warm_up={
            "rounds": warm_rounds,
            "pages_to_scan": WARM_PAGES,
            "seconds": warm_s,
            "guests_boot_seconds": round(boot_wall, 3),
        },
        lifetimes=lifetimes,
        clk_tck=os.sysconf("SC_CLK_TCK"),
        cpus=os.cpu_count(),
        rep=rep,
        load=load,
        oracle="snapshot",
        validation=validation,
        diagnosis=diagnosis,
        merge_failures=failures,
    )
    (out / "summary.json").write_text(summary.to_json())
    return summary


def _quiet_stop(oracle: SnapshotOracle) -> None:
    """Stop the oracle's thread on a failure path (its own error is not the news)."""
    with contextlib.suppress(PyksmError):
        oracle.stop()

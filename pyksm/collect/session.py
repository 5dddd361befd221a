"""One collector run: probes -> (trace file) -> controller -> kernel hint buffer.

Two modes share the loop:

- live (default): hints go to debugfs ``ksm/hints_raw``; needs the KSM++ kernel
  and refuses to start elsewhere;
- record (``record=PATH``): raw probe events are appended to a hint trace
  (pyksm.collect.tracefile); works on any kernel with syscall tracepoints
  (the vfs probe layers need BPF trampolines or kprobes).
  The controller still runs, without sending, so the statistics say how
  much would have been hinted and how much landed outside target memory.

The loop drains the ring buffer every ``drain_s`` (never per event) while
reads arrive; after a drain that found none it waits in the ring buffer's
poll, twice as long each time, up to ``idle_drain_s``, and the first read
ends that wait. Under TCG an empty drain cost 3-7 ms, so a collector
draining 20 times a second beside idle guests used 15 % of a CPU; a plain
sleep instead of the poll delayed the first hint of a burst by up to
``idle_drain_s``, long enough for ksmd's linear scan of a small process to
merge the pages first. It re-resolves targets every ``refresh_s`` (new
QEMUs join, exited ones leave) and flushes the trace on every drain and on
SIGINT/SIGTERM.

Live mode forwards hints while the kernel's hint stack has room
(pyksm.control.ratecap) and, with ``adaptive_interleave``, sets
``hint_interleave`` from the kernel's backlog every half second
(pyksm.control.interleave); the knob is written back as found when the run
ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from pyksm.collect import qmp
from pyksm.collect.stats import CollectStats
from pyksm.collect.targets import MemoryMaps, TargetSpec
from pyksm.collect.tracefile import TraceWriter
from pyksm.control.controller import Controller
from pyksm.control.interleave import DEFAULT_LADDER, AdaptiveInterleave, Ratio, format_ratio
from pyksm.control.ratecap import BacklogCap, read_backlog
from pyksm.control.trust import TrustPolicy
from pyksm.errors import PyksmError
from pyksm.events import PROBE_NAMES
from pyksm.kernel.hints import HintSink, open_intake
from pyksm.kernel.ksm import Ksm
from pyksm.probes.features import READ_SYSCALLS, VFS_FUNCTIONS
from pyksm.probes.loader import ProbeOptions, ReadProbes

__all__ = ["CollectOptions", "run"]


@dataclass
class CollectOptions:
    targets: TargetSpec
    record: Path | None = None
    duration: float | None = None
    interval: float | None = None
    count: int | None = None
    min_bytes: int = 512
    syscalls: tuple[str, ...] = READ_SYSCALLS
    layer: str = "auto"  # probe layer: pyksm.probes.loader.LAYER_CHOICES
    functions: tuple[str, ...] = VFS_FUNCTIONS  # vfs layer
    qmp_sockets: tuple[str, ...] = ()
    policy: TrustPolicy = field(default_factory=TrustPolicy)
    filter_memory: bool = True
    rate_cap: bool = True
    drain_s: float = 0.05
    idle_drain_s: float = 0.4  # the longest wait between drains while no reads arrive
    refresh_s: float = 1.0
    intake: str = "auto"  # pyksm.kernel.hints.INTAKES
    # Live mode: hint_interleave follows the kernel's backlog (restored on exit).
    adaptive_interleave: bool = False
    interleave_ladder: tuple[Ratio, ...] = DEFAULT_LADDER
    # Told "ready" once probes are attached and targets set (pyksm.collect.process).
    ready_fd: int | None = None
    ready_file: Path | None = None


class _StopFlag:
    """Signal handler that only records the signal.

    Raising from the handler is not enough: a signal that lands while
    Python runs bcc's ring-buffer callback (a ctypes callback) has its
    exception printed and dropped, and the collector would run on. The
    loop checks the flag instead, at least every drain interval.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum


def _live_writer(intake: str) -> tuple[HintSink, BacklogCap]:
    k = Ksm()
    if not k.hints_supported:
        raise PyksmError(
            "live mode needs the KSM++ kernel (no /sys/kernel/mm/ksm/hint_capacity here)",
            hint="record instead: pyksm collect --record FILE ...; or boot it: pyksm vm run",
        )
    if k.read_int("hint_capacity") == 0:
        raise PyksmError(
            "KSM++ hints are off (ksm/hint_capacity = 0)",
            hint="pyksm ksm set hint_capacity=4096",
        )
    return open_intake(intake), BacklogCap(lambda: read_backlog(k))


def _query_qmp(opts: CollectOptions, ready: Callable[[str], None]) -> dict[int, int]:
    """Each --qmp socket's QEMU joins the targets; returns its RAM size by pid."""
    ram_sizes: dict[int, int] = {}
    for sock in opts.qmp_sockets:
        q = qmp.query(sock)
        ready(f"QMP {sock}: QEMU pid {q.pid}, RAM {q.ram_bytes >> 20} MiB")
        ram_sizes[q.pid] = q.ram_bytes
        opts.targets.pids = (*opts.targets.pids, q.pid)
    return ram_sizes


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopFlag]:
    """SIGINT/SIGTERM set a flag for the loop; the old handlers come back on exit."""
    stop = _StopFlag()
    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


class _Session:
    """The parts of one run, opened in order; ``stack`` closes whatever was opened."""

    def __init__(self, opts: CollectOptions, stack: contextlib.ExitStack) -> None:
        self.opts = opts
        self.trace: TraceWriter | None = None
        self.writer: HintSink | None = None
        self.adaptive: AdaptiveInterleave | None = None
        cap: BacklogCap | None = None
        # Output first: a bad trace file fails before any probe is attached.
        if opts.record is not None:
            self.trace = stack.enter_context(TraceWriter(opts.record))
        else:
            self.writer, cap = _live_writer(opts.intake)
            stack.callback(self.writer.close)
        self.probes = ReadProbes(
            ProbeOptions(
                min_bytes=opts.min_bytes,
                syscalls=opts.syscalls,
                layer=opts.layer,
                functions=opts.functions,
            )
        )
        stack.callback(self.probes.close)
        self.memory = MemoryMaps()
        self.ctl = Controller(
            memory=(lambda tgid: self.memory.spans(tgid)) if opts.filter_memory else None,
            policy=opts.policy,
            cap=cap if opts.rate_cap else None,
        )
        if opts.adaptive_interleave and self.writer is not None:
            # Last in, first out: the knob is back before the probes detach.
            self.adaptive = stack.enter_context(
                AdaptiveInterleave(Ksm(), ladder=opts.interleave_ladder)
            )
        self.stats: dict[str, Any] = {
            "mode": "record" if self.trace else "live",
            "record": str(opts.record) if opts.record else None,
            "headers": self.probes.headers,
            "features": self.probes.features.describe(),
            "layer": self.probes.layer,
            "syscalls": list(self.probes.syscalls),
            "functions": list(self.probes.functions),
            "targets_seen": [],
            "targets_exited": [],
        }
        self.current: dict[int, int] = {}
        self.seen: set[int] = set()
        self.cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        self.t0 = time.monotonic()

    def refresh(self) -> None:
        """Targets now: new ones join, exited ones leave (and are forgotten)."""
        policy = self.opts.policy
        tgids = self.opts.targets.resolve()
        for t in tgids:
            policy.learn(t)
        tgids = {t for t in tgids if policy.allowed(t)}
        for gone in set(self.current) - tgids:
            self.stats["targets_exited"].append(gone)
            self.ctl.forget(gone)
            self.memory.forget(gone)
            policy.forget(gone)
        self.current.clear()
        self.current.update({t: 0 for t in tgids})
        self.probes.set_targets(self.current)
        self.seen.update(tgids)

    def step(self) -> int:
        """Drain the probes once: record, control, send; the number of events."""
        events = self.probes.drain()
        if events:
            if self.trace is not None:
                self.trace.add(events)
                self.trace.flush()
            hints = self.ctl.process(events, time.monotonic_ns())
            if self.writer is not None and hints:
                self.writer.send(hints)
        if self.adaptive is not None:
            c = self.ctl.stats
            self.adaptive.tick(time.monotonic(), c.hints, c.hinted_pages)
        return len(events)

    def snapshot(self) -> CollectStats:
        return _snapshot(
            self.stats,
            self.ctl,
            self.writer,
            self.trace,
            self.probes,
            self.adaptive,
            self.t0,
            self.cpu0,
        )

    def loop(self, stop: _StopFlag, report: Callable[[CollectStats], None]) -> bool:
        """Drain until the duration, count or a signal ends it; True if interrupted."""
        opts = self.opts
        next_refresh = self.t0 + opts.refresh_s
        next_report = self.t0 + opts.interval if opts.interval else None
        reports = 0
        wait = opts.drain_s
        # The adaptive interleave acts on the kernel's backlog every period, reads or not.
        longest = max(opts.idle_drain_s, opts.drain_s)
        if self.adaptive is not None:
            longest = min(longest, max(self.adaptive.period_s / 2, opts.drain_s))
        try:
            while stop.signum is None:
                now = time.monotonic()
                if now >= next_refresh:
                    self.refresh()
                    next_refresh = now + opts.refresh_s
                # Back to drain_s as soon as reads arrive; doubling while none do.
                busy = self.step() > 0
                wait = opts.drain_s if busy else min(2 * wait, longest)
                if next_report is not None and now >= next_report:
                    report(self.snapshot())
                    reports += 1
                    next_report += opts.interval or 0
                    if opts.count and reports >= opts.count:
                        break
                if opts.duration is not None and now - self.t0 >= opts.duration:
                    break
                if busy:
                    time.sleep(wait)  # let reads gather: one drain per drain_s
                else:
                    self.probes.wait(wait)  # idle: the first read ends the wait
        except KeyboardInterrupt:
            return True
        return stop.signum is not None


def _tell_ready(opts: CollectOptions) -> None:
    """One line to --ready-fd (then closed) and --ready-file (written whole, by rename)."""
    if opts.ready_fd is not None:
        try:
            os.write(opts.ready_fd, b"ready\n")
        except OSError as e:
            raise PyksmError(f"--ready-fd {opts.ready_fd}: {e.strerror}") from None
        finally:
            with contextlib.suppress(OSError):
                os.close(opts.ready_fd)
    if opts.ready_file is not None:
        tmp = opts.ready_file.with_name(opts.ready_file.name + ".tmp")
        try:
            tmp.write_text("ready\n")
            os.replace(tmp, opts.ready_file)
        except OSError as e:
            raise PyksmError(f"--ready-file {opts.ready_file}: {e.strerror}") from None


def run(
    opts: CollectOptions,
    report: Callable[[CollectStats], None],
    ready: Callable[[str], None] = lambda _msg: None,
) -> CollectStats:
    """Collect until the duration ends or SIGINT/SIGTERM; return the statistics.

    ``report`` gets a statistics snapshot every ``interval``; ``ready`` one
    line per QMP socket and one once the probes are attached and the targets
    are set. Whatever was opened (trace, hint writer, probes, signal
    handlers) is closed on every path, failures included.
    """
    if opts.adaptive_interleave and opts.record is not None:
        raise PyksmError("--adaptive-interleave needs live mode (hints sent), not --record")
    ram_sizes = _query_qmp(opts, ready)
    opts.targets.check()
    with contextlib.ExitStack() as stack:
        # A signal while bcc compiles stops the run once attached, not mid-compile.
        stop = stack.enter_context(_stop_on_signals())
        sess = _Session(opts, stack)
        sess.memory.ram_sizes.update(ram_sizes)
        sess.refresh()
        ready(
            f"attached ({sess.stats['mode']} mode): {len(sess.current)} target(s) now; "
            f"{sess.probes.layer} layer, tracing {', '.join(sess.probes.attached)}; "
            f"headers {sess.probes.headers}"
        )
        _tell_ready(opts)
        interrupted = sess.loop(stop, report)
        sess.step()  # what arrived since the last drain
        sess.stats["targets_seen"] = sorted(sess.seen)
        sess.stats["interrupted"] = interrupted
        if sess.trace is not None:
            sess.trace.flush()
        if sess.adaptive is not None:
            sess.adaptive.restore()  # (again on the way out: a no-op then)
        return sess.snapshot()


def _snapshot(
    stats: dict[str, Any],
    ctl: Controller,
    writer: HintSink | None,
    trace: TraceWriter | None,
    probes: ReadProbes,
    adaptive: AdaptiveInterleave | None,
    t0: float,
    cpu0: resource.struct_rusage,
) -> CollectStats:
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - t0
    used = cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    c = ctl.stats
    return CollectStats(
        **stats,
        seconds=round(wall, 3),
        cpu_seconds=round(used, 3),
        cpu_percent=round(100 * used / wall, 2) if wall > 0 else 0.0,
        events=c.events,
        bytes_read=c.bytes_read,
        outside_bytes=c.outside_bytes,
        refused_events=c.refused_events,
        hints=c.hints,
        hinted_pages=c.hinted_pages,
        events_by_probe={PROBE_NAMES.get(p, str(p)): n for p, n in c.by_probe.items()},
        dedup_dropped=ctl.recent.dropped,
        rate_dropped_pages=ctl.cap.dropped_pages if ctl.cap else 0,
        rate_dropped=dict(ctl.cap.dropped) if ctl.cap else {},
        interleave_base=adaptive.original if adaptive else None,
        interleave_now=format_ratio(adaptive.current) if adaptive and adaptive.current else None,
        interleave_changes=adaptive.changes if adaptive else 0,
        interleave_ticks=dict(adaptive.ticks_by_ratio) if adaptive else {},
        policy_refused=ctl.policy.refused,
        records_written=trace.written if trace else 0,
        hints_sent=writer.sent if writer else 0,
        hint_writes=writer.writes if writer else 0,
        hints_rejected=dict(writer.rejected) if writer else {},
        bpf=probes.stats(),
    )

"""Command-line subcommands of pyksm.collect (registered by pyksm.cli).

pyksm collect [-p PID] [--cgroup PATH] [--qemu] [--qmp SOCKET] [-d SECONDS]
              [--record FILE] [--json] [--ebpf]
              [--layer auto|syscalls|vfs|vfs-fentry|vfs-kprobe]
              [--syscalls LIST | --functions LIST] [--safe --allow PID|COMM
              --trust-group NAME=PID,...] [--adaptive-interleave [--interleave-ladder LIST]]
              [interval [count]]
pyksm trace show FILE     (summary of a recorded hint trace)
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.events import LAYER_CHOICES  # no probe code to build the parser
from pyksm.kernel.hints import INTAKES
from pyksm.terminal import err, escape

EXAMPLES = """examples:
  pyksm collect --qemu                    # hint every QEMU's disk reads (KSM++ kernel)
  pyksm collect -p 1234 -d 60 --json      # one process for a minute, JSON statistics
  pyksm collect --qemu --record q.trace   # record only: any kernel, no hints sent
  pyksm collect --qemu --layer vfs        # kernel functions: also io_uring (buffered) reads
  pyksm collect --qmp /run/vm1.qmp 5      # the QEMU behind a QMP socket; stats every 5 s
  pyksm collect --qemu --adaptive-interleave   # more hint steps while hints wait
  pyksm collect --cgroup machine.slice --safe --trust-group a=101,102 --allow 101 --allow 102
  pyksm collect --ebpf                    # print the BPF program and exit
  pyksm hint --replay q.trace --speed 2   # replay a recording at twice its speed
  pyksm trace show q.trace
"""


def _ladder(text: str) -> tuple[tuple[int, int], ...]:
    from pyksm.control.interleave import parse_ladder

    try:
        return parse_ladder(text)
    except PyksmError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _trust_group(text: str) -> tuple[str, list[int]]:
    name, sep, pids = text.partition("=")
    try:
        members = [int(p) for p in pids.split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=PID,PID..., got {text!r}") from None
    if not sep or not name or not members:
        raise argparse.ArgumentTypeError(f"expected NAME=PID,PID..., got {text!r}")
    return name, members


# QEMU reads guest disks with these (aio=threads: pread64/preadv; aio=native:
# io_submit); its read() calls are eventfd chatter. Every attached syscall
# costs every process on the machine, so --qemu attaches only these.
QEMU_SYSCALLS = ("pread64", "preadv", "preadv2", "io_submit")


def _functions(args: argparse.Namespace) -> tuple[str, ...]:
    from pyksm.probes.features import VFS_FUNCTIONS

    return tuple(args.functions) if args.functions else VFS_FUNCTIONS


def _check_layer(args: argparse.Namespace) -> Any:
    """Layer flags that contradict each other, and a vfs layer the kernel cannot run:
    fail early, before anything starts. Returns the probed Features (vfs layers) or None."""
    if args.layer.startswith("vfs"):
        if args.syscalls:
            raise PyksmError(
                f"--syscalls chooses tracepoints of the syscalls layer, not --layer {args.layer}"
            )
        from pyksm.probes import features, loader

        feats = features.probe(trampolines=loader.needs_trampoline_check(args.layer))
        loader.resolve_layer(args.layer, feats)
        return feats
    if args.functions:
        raise PyksmError("--functions chooses kernel functions of the vfs layers (--layer vfs)")
    return None


def _syscalls(args: argparse.Namespace) -> tuple[str, ...]:
    from pyksm.probes.features import READ_SYSCALLS

    if args.syscalls:
        return tuple(args.syscalls)
    only_qemu = (args.qemu or args.qmp) and not (args.pid or args.cgroup)
    return QEMU_SYSCALLS if only_qemu else READ_SYSCALLS


def _policy(args: argparse.Namespace) -> Any:
    from pyksm.control.trust import TrustPolicy

    groups = {pid: name for name, pids in args.trust_group or () for pid in pids}
    if not args.safe:
        if groups or args.allow:
            raise PyksmError("--allow and --trust-group only apply with --safe")
        return TrustPolicy()
    allow = args.allow or []
    tgids = frozenset(int(a) for a in allow if a.isdigit())
    comms = frozenset(a for a in allow if not a.isdigit())
    if not tgids and not comms:
        raise PyksmError("--safe needs at least one --allow PID|COMM")
    for name in comms:
        # The kernel keeps TASK_COMM_LEN - 1 characters: a longer name never matches.
        if len(name) > 15 or "/" in name or not name:
            raise PyksmError(
                f"--allow {name!r}: a command name as in /proc/PID/comm "
                f"(at most 15 characters, e.g. {name[:15]!r}), no '/'"
            )
    return TrustPolicy(safe=True, allow_tgids=tgids, allow_comms=comms, groups=groups)


def cmd_collect(args: argparse.Namespace) -> int:
    feats = _check_layer(args)
    if args.ebpf:
        from pyksm.probes import features, loader

        popts = loader.ProbeOptions(
            min_bytes=args.min_bytes,
            syscalls=_syscalls(args),
            layer=args.layer,
            functions=_functions(args),
        )
        if feats is None:
            feats = features.probe(trampolines=loader.needs_trampoline_check(args.layer))
        text, cflags = loader.program_text(popts, feats)
        layer = loader.resolve_layer(args.layer, feats)
        print(f"// layer: {layer} ({args.layer})\n// cflags: {' '.join(cflags)}\n{text}")
        return 0
    from pyksm.collect.session import CollectOptions, run
    from pyksm.collect.stats import CollectStats
    from pyksm.collect.targets import TargetSpec

    if args.interleave_ladder and not args.adaptive_interleave:
        raise PyksmError("--interleave-ladder only applies with --adaptive-interleave")
    opts = CollectOptions(
        targets=TargetSpec(
            pids=tuple(args.pid or ()), cgroups=tuple(args.cgroup or ()), qemu=args.qemu
        ),
        record=Path(args.record) if args.record else None,
        duration=args.duration,
        interval=args.interval,
        count=args.count,
        min_bytes=args.min_bytes,
        syscalls=_syscalls(args),
        layer=args.layer,
        functions=_functions(args),
        qmp_sockets=tuple(args.qmp or ()),
        policy=_policy(args),
        filter_memory=not args.no_memory_filter,
        intake=args.intake,
        adaptive_interleave=args.adaptive_interleave,
        ready_fd=args.ready_fd,
        ready_file=args.ready_file,
    )
    if args.interleave_ladder:
        opts.interleave_ladder = args.interleave_ladder

    def report(s: CollectStats) -> None:
        if args.json:
            print(s.to_json(), flush=True)
        else:
            err.print(
                f"{s.seconds:8.1f}s events {s.events:>9} read {s.bytes_read >> 20:>7} MiB "
                f"hinted {s.hinted_pages:>9} pages sent {s.hints_sent:>8} "
                f"rejected {sum(s.hints_rejected.values()):>6} "
                f"capped {s.rate_dropped_pages:>7} pages cpu {s.cpu_percent:5.1f}%"
                + (f" interleave {s.interleave_now}" if s.interleave_now else ""),
                highlight=False,
            )

    if not (opts.targets.pids or opts.targets.cgroups or opts.targets.qemu or opts.qmp_sockets):
        raise PyksmError("no targets: give -p PID, --cgroup PATH, --qemu or --qmp SOCKET")
    stats = run(
        opts, report, ready=lambda msg: err.print(f"collect: {escape(msg)}", highlight=False)
    )
    if args.json and args.interval:
        report(stats)  # JSON Lines: one object a line, the final statistics last
    elif args.json:
        print(stats.to_json(indent=2))
    else:
        report(stats)
        where = f"; trace in {escape(stats.record)}" if stats.record else ""
        err.print(
            f"collect: {stats.mode} mode, {len(stats.targets_seen)} target(s), "
            f"{stats.events} reads, {stats.hinted_pages} pages hinted{where}",
            highlight=False,
        )
        if stats.rate_dropped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.rate_dropped.items()))
            err.print(
                f"collect: rate cap dropped {stats.rate_dropped_pages} pages "
                f"({reasons} hint records): the kernel's hint stack was full and dropping",
                highlight=False,
            )
        if stats.interleave_base is not None:
            ticks = ", ".join(f"{r} {n}" for r, n in stats.interleave_ticks.items())
            err.print(
                f"collect: adaptive hint_interleave: {stats.interleave_changes} changes, "
                f"ticks per ratio: {ticks or 'none'}; "
                f"back to {escape(stats.interleave_base)}",
                highlight=False,
            )
    return 0


def cmd_trace_show(args: argparse.Namespace) -> int:
    from pyksm.collect import tracefile

    info = tracefile.inspect(Path(args.file))
    probes: Counter[str] = Counter()
    tgids: Counter[int] = Counter()
    nbytes = 0
    first = last = None
    for e in tracefile.read_trace(Path(args.file)):
        probes[tracefile.probe_name(e.probe)] += 1
        tgids[e.tgid] += e.length
        nbytes += e.length
        first = e.ts_ns if first is None else first
        last = e.ts_ns
    summary = {
        "file": str(info.path),
        "version": info.version,
        "records": info.records,
        "bytes": nbytes,
        "seconds": round(((last or 0) - (first or 0)) / 1e9, 3),
        "by_probe": dict(probes),
        "bytes_by_tgid": {str(k): v for k, v in tgids.items()},
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_hint(args: argparse.Namespace) -> int:
    from pyksm.kernel import hints, wire

    if args.replay:
        from pyksm.collect import replay

        stats = replay.replay(Path(args.replay), speed=args.speed, intake=args.intake)
        print(json.dumps(stats, indent=2))
        return 0
    if args.pid is None or args.start is None or args.len is None:
        raise PyksmError("pyksm hint needs PID START LEN (or --replay FILE)")

    if args.text:
        hints.send_text([f"{args.pid} {args.start:#x} {args.len}"])
        err.print(f"sent text hint pid {args.pid} {args.start:#x}+{args.len}")
        return 0
    w = hints.open_intake(args.intake)
    try:
        ok = w.send([wire.Hint(args.pid, args.start, args.len)])
    finally:
        w.close()
    if not ok:
        reason = ", ".join(w.rejected) or "rejected"
        raise PyksmError(f"the kernel rejected the hint ({w.name}): {reason}")
    err.print(f"sent hint pid {args.pid} {args.start:#x}+{args.len} ({w.name})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to the top-level parser."""
    c = sub.add_parser(
        "collect",
        help="trace targets' disk reads and hint them to KSM++ (or record them)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "-p", "--pid", type=argtypes.pid, action="append", help="target process (repeatable)"
    )
    c.add_argument("--cgroup", action="append", help="cgroup v2 path (repeatable)")
    c.add_argument(
        "--qemu", action="store_true", help="every qemu-system-* process, also later ones"
    )
    c.add_argument("--qmp", action="append", metavar="SOCKET", help="a QEMU's QMP socket")
    c.add_argument("-d", "--duration", type=argtypes.positive_float, help="stop after SECONDS")
    c.add_argument(
        "--record",
        metavar="FILE",
        type=argtypes.output_file,
        help="append probe events to a hint trace; send no hints",
    )
    c.add_argument(
        "-j",
        "--json",
        action="store_true",
        help="statistics as JSON (with an INTERVAL: JSON Lines, one object a line)",
    )
    c.add_argument("--ebpf", action="store_true", help="print the chosen BPF program and exit")
    c.add_argument(
        "--min-bytes",
        type=argtypes.nonneg_int,
        default=512,
        help="ignore shorter reads (default 512)",
    )
    c.add_argument(
        "--syscalls",
        metavar="LIST",
        type=argtypes.comma_list,
        help="read syscalls to attach, comma-separated (default: all; with only "
        "--qemu/--qmp targets: " + ",".join(QEMU_SYSCALLS) + ")",
    )
    c.add_argument(
        "--layer",
        choices=LAYER_CHOICES,
        default="auto",
        help="probe layer: syscalls (tracepoints, any kernel); vfs (vfs_read, vfs_readv, "
        "aio_read, filemap_read: also io_uring reads, which make no read syscall) through "
        "BPF trampolines where they work (vfs-fentry), else kprobes (vfs-kprobe); "
        "auto = syscalls (default)",
    )
    c.add_argument(
        "--functions",
        metavar="LIST",
        type=argtypes.comma_list,
        help="vfs layers: kernel functions to probe, comma-separated (default: all)",
    )
    c.add_argument(
        "--no-memory-filter",
        action="store_true",
        help="hint reads outside MADV_MERGEABLE memory too (the kernel rejects them)",
    )
    c.add_argument(
        "--ready-fd",
        type=argtypes.open_fd,
        metavar="FD",
        help="write one line to file descriptor FD (then close it) once attached",
    )
    c.add_argument(
        "--ready-file",
        type=argtypes.output_file,
        metavar="FILE",
        help="create FILE once attached (written to FILE.tmp, then renamed)",
    )
    c.add_argument(
        "--intake",
        choices=INTAKES,
        default="auto",
        help="how hints reach the kernel: process_madvise(MADV_KSM_HINT) through pidfds, "
        "debugfs ksm/hints_raw, or auto (madvise where the kernel has it; default)",
    )
    c.add_argument(
        "--adaptive-interleave",
        action="store_true",
        help="live mode: set ksm/hint_interleave from the kernel's hint backlog every 0.5 s "
        "(more hint steps while hints wait, the value found once none do; written back "
        "on exit)",
    )
    c.add_argument(
        "--interleave-ladder",
        type=_ladder,
        metavar="LIST",
        help="the ratios --adaptive-interleave picks from, H:L comma-separated in growing "
        "hint share (default 1:1,2:1,4:1,8:1,16:1; the kernel allows L >= 1, H <= 16 L)",
    )
    c.add_argument("--safe", action="store_true", help="hint only --allow'ed targets")
    c.add_argument("--allow", action="append", metavar="PID|COMM", help="safe mode allowlist")
    c.add_argument(
        "--trust-group",
        type=_trust_group,
        action="append",
        metavar="NAME=PID,...",
        help="safe mode: one group's processes are hinted at a time",
    )
    c.add_argument(
        "interval",
        nargs="?",
        type=argtypes.positive_float,
        help="print statistics every INTERVAL s",
    )
    c.add_argument(
        "count", nargs="?", type=argtypes.positive_int, help="stop after COUNT intervals"
    )
    c.set_defaults(func=cmd_collect)

    t = sub.add_parser("trace", help="hint trace files").add_subparsers(
        dest="action", required=True
    )
    s = t.add_parser("show", help="summarise a recorded hint trace")
    s.add_argument("file")
    s.set_defaults(func=cmd_trace_show)

    h = sub.add_parser("hint", help="send one hint to the KSM++ kernel")
    h.add_argument("pid", type=argtypes.pid, nargs="?")
    h.add_argument("start", type=argtypes.address, nargs="?", help="virtual address (0x... ok)")
    h.add_argument("len", type=argtypes.positive_int, nargs="?", help="bytes")
    h.add_argument("--text", action="store_true", help="use the text interface ksm/hints")
    h.add_argument(
        "--intake",
        choices=INTAKES,
        default="auto",
        help="process_madvise(MADV_KSM_HINT), debugfs ksm/hints_raw, or auto (default)",
    )
    h.add_argument("--replay", metavar="FILE", help="send the hints of a recorded trace")
    h.add_argument(
        "--speed", type=argtypes.nonneg_float, default=1.0, help="replay speed (0: no pauses)"
    )
    h.set_defaults(func=cmd_hint)

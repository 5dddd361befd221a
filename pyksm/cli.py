"""The ``pyksm`` command.

pyksm kernel build [--debug] [--vanilla] [--jobs N]
pyksm vm run [--kernel VARIANT|PATH] [--memory 2G] [--cpus 2] [--numa] [--timeout S] -- CMD...
pyksm vm scan-log CONSOLE_LOG
pyksm demo
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path

from rich.console import Console

from pyksm import __version__
from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import console as kconsole
from pyksm.lab import vm

# Logs and CI are not terminals: give tables room instead of 80 columns.
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)

EXAMPLES = """examples:
  pyksm kernel build                 # patched test kernel (cached)
  pyksm kernel build --debug         # KASAN, KFENCE, lockdep, DEBUG_VM
  pyksm kernel build --vanilla       # the same config without the KSM++ series
  pyksm vm run -- uname -r           # boot the patched test kernel, run a command
  pyksm vm run --kernel debug --numa -- ./selftest
  pyksm vm scan-log pyksm-out/console.log
"""


def resolve_kernel(spec: str, console: Console) -> Path:
    """VARIANT (test, debug, vanilla, vanilla-debug) or a path to a bzImage."""
    path = Path(spec)
    if "/" in spec or path.exists():
        if not path.is_file():
            raise PyksmError(f"kernel image {spec} not found")
        return path
    variants = {
        "test": kbuild.BuildRequest(),
        "patched": kbuild.BuildRequest(),
        "debug": kbuild.BuildRequest(variant="debug"),
        "vanilla": kbuild.BuildRequest(vanilla=True),
        "vanilla-debug": kbuild.BuildRequest(variant="debug", vanilla=True),
    }
    if spec not in variants:
        raise PyksmError(
            f"unknown kernel {spec!r}: give a bzImage path or one of {', '.join(variants)}"
        )
    return kbuild.build(variants[spec], console).bzimage


def cmd_kernel_build(args: argparse.Namespace) -> int:
    req = kbuild.BuildRequest(
        variant="debug" if args.debug else "test",
        vanilla=args.vanilla,
        jobs=args.jobs or kbuild.BuildRequest().jobs,
        extra_fragments=tuple(Path(f).resolve() for f in args.fragment or ()),
    )
    result = kbuild.build(req, err)
    if args.json:
        print(json.dumps({**result.__dict__, "path": str(result.path)}, indent=2))
    else:
        out.print(f"{result.bzimage}")
    return 0


def cmd_vm_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise PyksmError("no command given: pyksm vm run [OPTIONS] -- CMD ...")
    bzimage = resolve_kernel(args.kernel, err)
    req = vm.VmRequest(
        bzimage=bzimage,
        command=command,
        memory=args.memory,
        cpus=args.cpus,
        numa=args.numa,
        timeout=args.timeout,
        outdir=Path(args.outdir).resolve(),
        append=args.append or [],
    )
    result = vm.run(req, show_console=args.console)
    return report_vm_result(result)


def report_vm_result(result: vm.VmResult) -> int:
    for rep in result.reports:
        err.print(f"[bold red]kernel {rep.kind} report[/] (console.log line {rep.line}):")
        err.print(rep.text, markup=False, highlight=False)
    if result.timed_out:
        err.print(f"[bold red]timeout[/] after {result.seconds:.0f} s; console tail:")
        err.print(vm.console_tail(result.console_log), markup=False, highlight=False)
    status = "[green]ok[/]" if result.ok else f"[red]exit {result.exit_code}[/]"
    err.print(
        f"vm: {status} (command exit {result.command_exit}, {result.accel}, "
        f"{result.seconds:.1f} s, console {result.console_log})"
    )
    return result.exit_code


def cmd_vm_scan_log(args: argparse.Namespace) -> int:
    try:
        text = Path(args.log).read_text(errors="replace")
    except OSError as e:
        raise PyksmError(f"cannot read {args.log}: {e.strerror}") from None
    reports = kconsole.scan(text)
    for rep in reports:
        out.print(f"[bold]{rep.kind}[/] line {rep.line}: {rep.headline}", highlight=False)
    out.print(f"{len(reports)} kernel report(s)")
    return 1 if reports else 0


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def cmd_ksm_show(args: argparse.Namespace) -> int:
    from pyksm.kernel import ksm

    k = ksm.Ksm()
    if not k.available():
        raise PyksmError("/sys/kernel/mm/ksm is missing: this kernel has no KSM (CONFIG_KSM)")
    state: dict[str, object] = dict(k.state())
    if args.pid:
        state = {"pid": args.pid, **ksm.process_stat(args.pid)}
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"KSM state of pid {args.pid}" if args.pid else "/sys/kernel/mm/ksm")
    table.add_column("name")
    table.add_column("value", justify="right")
    table.add_column("since")
    for name, value in state.items():
        knob = ksm.KNOBS.get(name)
        table.add_row(name, str(value), knob.since if knob else "")
    out.print(table)
    return 0


def cmd_ksm_set(args: argparse.Namespace) -> int:
    from pyksm.kernel import ksm

    k = ksm.Ksm()
    for item in args.assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise PyksmError(f"expected KNOB=VALUE, got {item!r}")
        k.write(name, value)
        err.print(f"ksm/{name} = {k.read(name)}")
    return 0


def cmd_hint(args: argparse.Namespace) -> int:
    from pyksm.kernel import hints, wire

    if args.replay:
        from pyksm.collect import replay

        sink = hints.open_intake(args.intake)
        try:
            stats = replay.replay(Path(args.replay), speed=args.speed, writer=sink)
        finally:
            sink.close()
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


def cmd_experiment_run(args: argparse.Namespace) -> int:
    from pyksm.experiment import host
    from pyksm.report import dataset, render

    path = host.run(
        args.scenario,
        args.modes.split(","),
        args.duration,
        args.scan_rate,
        Path(args.outdir).resolve(),
        err,
        warm_up=args.warm_up,
        trace_hints=args.trace_hints,
    )
    render.terminal_summary([dataset.load(path)], out)
    err.print(f"results: {path}  (pyksm report {path})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pyksm.report import dataset, render

    exps = dataset.find([Path(p) for p in args.results])
    render.terminal_summary(exps, out)
    index = render.write(exps, Path(args.out))
    err.print(f"report: {index} (PNGs and metrics.json beside it)")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from pyksm.kernel import ksm
    from pyksm.report import top

    if not ksm.Ksm().available():
        raise PyksmError("/sys/kernel/mm/ksm is missing: this kernel has no KSM (CONFIG_KSM)")
    with contextlib.suppress(KeyboardInterrupt):
        top.run(
            args.interval,
            args.count,
            Path(args.prometheus) if args.prometheus else None,
            out,
            once=args.once,
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pyksm import demo

    return demo.run(Path(args.outdir).resolve(), out, err, args.duration)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyksm",
        description="KSM++: I/O hints for Linux KSM — lab, probes, analysis, reports.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"pyksm {__version__}")
    sub = p.add_subparsers(dest="group", required=True)

    kernel = sub.add_parser("kernel", help="build test kernels").add_subparsers(
        dest="action", required=True
    )
    b = kernel.add_parser("build", help="build (or fetch from cache) a test kernel")
    b.add_argument("--debug", action="store_true", help="KASAN, KFENCE, lockdep, DEBUG_VM")
    b.add_argument("--vanilla", action="store_true", help="without the KSM++ patch series")
    b.add_argument("--jobs", "-j", type=int, default=0, help="make -j (default: all cores)")
    b.add_argument("--json", action="store_true", help="print the build record as JSON")
    b.add_argument(
        "--fragment",
        "-f",
        action="append",
        metavar="FILE",
        help="extra kconfig fragment (own object tree), e.g. to add KCSAN",
    )
    b.set_defaults(func=cmd_kernel_build)

    vmp = sub.add_parser("vm", help="boot test kernels").add_subparsers(
        dest="action", required=True
    )
    r = vmp.add_parser("run", help="boot a kernel with virtme-ng and run CMD inside")
    r.add_argument("--kernel", "-k", default="test", help="VARIANT or bzImage path")
    r.add_argument("--memory", "-m", default="2G")
    r.add_argument("--cpus", "-c", type=int, default=2)
    r.add_argument("--numa", action="store_true", help="two emulated NUMA nodes")
    r.add_argument("--timeout", "-t", type=float, default=900.0, help="seconds")
    r.add_argument("--outdir", "-o", default="pyksm-out", help="shared output directory")
    r.add_argument("--append", "-a", action="append", help="extra kernel command line")
    r.add_argument("--console", action="store_true", help="also show the kernel console")
    r.add_argument("command", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_vm_run)
    s = vmp.add_parser("scan-log", help="list kernel bug reports in a saved console log")
    s.add_argument("log")
    s.set_defaults(func=cmd_vm_scan_log)

    kp = sub.add_parser("ksm", help="KSM knobs and counters").add_subparsers(
        dest="action", required=True
    )
    ks = kp.add_parser("show", help="print KSM's sysfs state (or a process's)")
    ks.add_argument("--pid", "-p", type=int, default=0)
    ks.add_argument("--json", action="store_true")
    ks.set_defaults(func=cmd_ksm_show)
    kset = kp.add_parser("set", help="write KSM knobs, e.g. pages_to_scan=100 run=1")
    kset.add_argument("assignments", nargs="+", metavar="KNOB=VALUE")
    kset.set_defaults(func=cmd_ksm_set)

    h = sub.add_parser("hint", help="send one hint to the KSM++ kernel")
    h.add_argument("pid", type=int, nargs="?")
    h.add_argument("start", type=_int, nargs="?", help="virtual address (0x... accepted)")
    h.add_argument("len", type=_int, nargs="?", help="bytes")
    h.add_argument("--text", action="store_true", help="use the text interface ksm/hints")
    h.add_argument(
        "--intake",
        choices=("auto", "madvise", "debugfs"),
        default="auto",
        help="process_madvise(MADV_KSM_HINT), debugfs ksm/hints_raw, or auto (default)",
    )
    h.add_argument("--replay", metavar="FILE", help="send the hints of a recorded trace")
    h.add_argument("--speed", type=float, default=1.0, help="replay speed (0: no pauses)")
    h.set_defaults(func=cmd_hint)

    # Subcommands owned by other stages of the pipeline.
    from pyksm.analysis import cli as analysis_cli
    from pyksm.collect import cli as collect_cli

    collect_cli.register(sub)
    analysis_cli.register(sub)
    from pyksm.lab import vagrant_cli

    vagrant_cli.register(sub)

    from pyksm.experiment import runner, scenarios

    ep = sub.add_parser("experiment", help="KSM vs KSM++ on built-in workloads").add_subparsers(
        dest="action", required=True
    )
    er = ep.add_parser("run", help="boot the test kernel and run a scenario once per mode")
    er.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    er.add_argument(
        "--modes",
        default="ksm,ksm++",
        help=f"comma list of {', '.join(runner.MODES)}; MODE@PAGES:MS gives a mode its own scan rate",
    )
    er.add_argument("--duration", type=float, default=None, help="seconds per mode")
    er.add_argument("--scan-rate", default="100:20", help="PAGES:MILLISECONDS (default 100:20)")
    er.add_argument(
        "--warm-up",
        type=int,
        default=runner.WARM_ROUNDS,
        help="full ksmd rounds over the booted guests before each mode's workload "
        f"(default {runner.WARM_ROUNDS}; 0: ksmd starts cold with the workload)",
    )
    er.add_argument(
        "--trace-hints",
        action="store_true",
        help="trace every hinted visit (ksm:ksm_hint_page) and count, per ksm++ mode, "
        "visits that missed a partner copy visited before in the same round",
    )
    er.add_argument("--outdir", "-o", default="pyksm-results")
    er.set_defaults(func=cmd_experiment_run)
    rp = sub.add_parser("report", help="merge report (HTML, PNG, summary) from results")
    rp.add_argument("results", nargs="+", help="results directories")
    rp.add_argument("--out", "-o", default="pyksm-report")
    rp.set_defaults(func=cmd_report)

    tp = sub.add_parser("top", help="live KSM state, per-process savings and hint rates")
    tp.add_argument("interval", nargs="?", type=float, default=2.0, help="seconds (default 2)")
    tp.add_argument("count", nargs="?", type=int, default=None, help="stop after COUNT updates")
    tp.add_argument("--once", action="store_true", help="print one table and exit")
    tp.add_argument("--prometheus", metavar="FILE", help="also write node-exporter textfile FILE")
    tp.set_defaults(func=cmd_top)

    d = sub.add_parser("demo", help="KSM vs KSM++ on kernel-build, report in ./pyksm-report")
    d.add_argument("--outdir", "-o", default="pyksm-results")
    d.add_argument("--duration", type=float, default=None, help="seconds per mode")
    d.set_defaults(func=cmd_demo)
    return p


def _terminated(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like ^C: builds kill make, VMs are torn down, traces flush.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args))
    except PyksmError as e:
        err.print(f"[bold red]pyksm: error:[/] {e}", highlight=False)
        if e.hint:
            err.print(f"  fix: {e.hint}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("pyksm: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

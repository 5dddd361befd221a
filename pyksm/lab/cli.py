"""``pyksm kernel build`` and ``pyksm vm run|scan-log`` (registered by pyksm.cli)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import console as kconsole
from pyksm.lab import vm
from pyksm.terminal import err, escape, out

__all__ = ["register", "report_vm_result", "resolve_kernel"]

VARIANTS = kbuild.VARIANTS


def resolve_kernel(spec: str, console: Console) -> Path:
    """VARIANT (test, debug, vanilla, vanilla-debug) or a path to a bzImage."""
    path = Path(spec)
    if "/" in spec or path.exists():
        if not path.is_file():
            raise PyksmError(f"kernel image {spec} not found")
        return path
    if spec not in VARIANTS:
        raise PyksmError(
            f"unknown kernel {spec!r}: give a bzImage path or one of {', '.join(VARIANTS)}"
        )
    return kbuild.build(VARIANTS[spec], console).bzimage


def cmd_kernel_build(args: argparse.Namespace) -> int:
    if args.guest and args.debug:
        raise PyksmError("--guest is a kernel of its own: it takes no --debug")
    req = kbuild.BuildRequest(
        variant="guest" if args.guest else "debug" if args.debug else "test",
        vanilla=args.vanilla or args.guest,
        jobs=args.jobs or kbuild.BuildRequest().jobs,
        extra_fragments=tuple(Path(f).resolve() for f in args.fragment or ()),
    )
    result = kbuild.build(req, err)
    if args.json:
        print(json.dumps({**result.__dict__, "path": str(result.path)}, indent=2))
    else:
        out.print(escape(str(result.bzimage)))
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
        f"{result.seconds:.1f} s, console {escape(str(result.console_log))})"
    )
    return result.exit_code


def cmd_vm_scan_log(args: argparse.Namespace) -> int:
    try:
        text = Path(args.log).read_text(errors="replace")
    except OSError as e:
        raise PyksmError(f"cannot read {args.log}: {e.strerror}") from None
    reports = kconsole.scan(text)
    for rep in reports:
        out.print(f"[bold]{rep.kind}[/] line {rep.line}: {escape(rep.headline)}", highlight=False)
    out.print(f"{len(reports)} kernel report(s)")
    return 1 if reports else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kernel = sub.add_parser("kernel", help="build test kernels").add_subparsers(
        dest="action", required=True
    )
    b = kernel.add_parser("build", help="build (or fetch from cache) a test kernel")
    b.add_argument("--debug", action="store_true", help="KASAN, KFENCE, lockdep, DEBUG_VM")
    b.add_argument("--vanilla", action="store_true", help="without the KSM++ patch series")
    b.add_argument(
        "--guest",
        action="store_true",
        help="the small vanilla kernel of the real-QEMU guests (guest.config; pyksm guest-image)",
    )
    b.add_argument("--jobs", "-j", type=argtypes.positive_int, help="make -j (default: all cores)")
    b.add_argument("--json", action="store_true", help="print the build record as JSON")
    b.add_argument(
        "--fragment",
        "-f",
        action="append",
        type=argtypes.existing_file,
        metavar="FILE",
        help="extra kconfig fragment (own object tree), e.g. to add KCSAN",
    )
    b.set_defaults(func=cmd_kernel_build)

    vmp = sub.add_parser("vm", help="boot test kernels").add_subparsers(
        dest="action", required=True
    )
    r = vmp.add_parser("run", help="boot a kernel with virtme-ng and run CMD inside")
    r.add_argument("--kernel", "-k", default="test", help="VARIANT or bzImage path")
    r.add_argument("--memory", "-m", default="2G", type=argtypes.memory_size)
    r.add_argument("--cpus", "-c", type=argtypes.positive_int, default=2)
    r.add_argument("--numa", action="store_true", help="two emulated NUMA nodes")
    r.add_argument("--timeout", "-t", type=argtypes.positive_float, default=900.0, help="seconds")
    r.add_argument(
        "--outdir",
        "-o",
        type=argtypes.output_dir,
        default="pyksm-out",
        help="shared output directory",
    )
    r.add_argument("--append", "-a", action="append", help="extra kernel command line")
    r.add_argument("--console", action="store_true", help="also show the kernel console")
    r.add_argument("command", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_vm_run)
    s = vmp.add_parser("scan-log", help="list kernel bug reports in a saved console log")
    s.add_argument("log", type=argtypes.existing_file)
    s.set_defaults(func=cmd_vm_scan_log)

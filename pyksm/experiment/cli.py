"""``pyksm experiment run``, ``matrix`` and ``qemu-guest`` (registered by pyksm.cli).

The results are shown by a function pyksm.cli passes in (the report's
terminal summary): the experiment layer sits below the report and does not
import it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.experiment import runner, scenarios
from pyksm.experiment.qemu_scenarios import QemuSizes
from pyksm.terminal import err, escape

__all__ = ["modes", "register", "scenario_names"]

Show = Callable[[Path], None]


def _once(names: list[str], what: str) -> list[str]:
    for n in names:
        if names.count(n) > 1:
            raise PyksmError(f"{what} {n} is given twice")
    return names


def modes(text: str) -> list[str]:
    """A comma list of modes (MODE[=H:L][@PAGES:MS]), each one known, none twice."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise PyksmError(f"no modes in {text!r}: give a comma list of {', '.join(runner.MODES)}")
    for m in names:
        runner.mode_config(m)
    return _once(names, "mode")


def scenario_names(text: str) -> list[str]:
    """A comma list of scenarios (or ``all``), each one known, none twice."""
    known = scenarios.names()
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return sorted(scenarios.SCENARIOS)  # the real-QEMU ones take hours: by name only
    if not names:
        raise PyksmError(f"no scenarios in {text!r}: give a comma list of {', '.join(known)}")
    for n in names:
        if n not in known:
            raise PyksmError(f"unknown scenario {n!r} (choose from {', '.join(known)}, or all)")
    return _once(names, "scenario")


def cmd_experiment_run(args: argparse.Namespace) -> int:
    from pyksm.experiment import host

    path = host.run(
        args.scenario,
        args.modes,
        args.duration,
        args.scan_rate,
        Path(args.outdir).resolve(),
        err,
        warm_up=args.warm_up,
        trace_hints=args.trace_hints,
        visit_cost=args.visit_cost,
        repeat=args.repeat,
        icount=args.clock == "icount",
        sizes=QemuSizes(args.guest_memory, args.ballast_mib, args.disk_mib),
    )
    if args.show is not None:
        args.show(path)
    err.print(f"results: {escape(str(path))}  (pyksm report {escape(str(path))})")
    return 0


def cmd_experiment_matrix(args: argparse.Namespace) -> int:
    from pyksm.experiment import host

    outdir = Path(args.outdir).resolve()
    paths = host.run_matrix(
        args.scenarios,
        args.modes,
        args.duration,
        args.scan_rate,
        outdir,
        err,
        warm_up=args.warm_up,
        trace_hints=args.trace_hints,
        visit_cost=args.visit_cost,
        repeat=args.repeat,
        icount=args.clock == "icount",
    )
    if args.show is not None:
        for path in paths:
            args.show(path)
    err.print(f"results: {escape(str(outdir))}  (pyksm report {escape(str(outdir))})")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``matrix`` share."""
    p.add_argument(
        "--modes",
        default="ksm,ksm++",
        type=argtypes.checked(modes),
        help=f"comma list of {', '.join(runner.MODES)}; MODE@PAGES:MS gives a mode its own "
        "scan rate, ksm++=H:L a fixed hint_interleave (e.g. ksm++=4:1)",
    )
    p.add_argument(
        "--repeat",
        type=argtypes.positive_int,
        default=1,
        help="runs of every mode (default 1), interleaved: repetition r runs the modes "
        "rotated by r - 1 (ksm, ksm++ | ksm++, ksm | ...), all in one VM boot",
    )
    p.add_argument(
        "--duration",
        type=argtypes.checked(scenarios.parse_duration),
        default=None,
        help=f"seconds per run (default: the scenario's; at most {scenarios.MAX_DURATION_S:.0f})",
    )
    p.add_argument(
        "--scan-rate",
        default="100:20",
        type=argtypes.checked(lambda t: (runner.parse_scan_rate(t), t)[1]),
        help="PAGES:MILLISECONDS (default 100:20)",
    )
    p.add_argument(
        "--warm-up",
        type=argtypes.nonneg_int,
        default=runner.WARM_ROUNDS,
        help="full ksmd rounds over the booted guests before each run's workload "
        f"(default {runner.WARM_ROUNDS}; 0: ksmd starts cold with the workload)",
    )
    p.add_argument(
        "--trace-hints",
        action="store_true",
        help="trace every hinted visit (ksm:ksm_hint_page) and count, per ksm++ mode, "
        "visits that missed a partner copy visited before in the same round",
    )
    p.add_argument(
        "--visit-cost",
        action="store_true",
        help="time ksmd's visits by kind (hinted, linear of a hinted page, linear) with "
        "kprobes (bpf/ksmd_visits.c), and their tree searches where the kernel keeps "
        "unstable_tree_walk() out of line; the report's 'ksmd visits' table",
    )
    p.add_argument(
        "--clock",
        choices=("realtime", "icount"),
        default="realtime",
        help="the test VM's clock: realtime (two vCPUs; host load moves CPU times) or icount "
        "(one vCPU, guest time counts guest instructions: ksmd's CPU figures measure its "
        "work whatever loads the host; ledger scenarios only)",
    )
    p.add_argument("--outdir", "-o", type=argtypes.output_dir, default="pyksm-results")


def cmd_experiment_qemu_guest(args: argparse.Namespace) -> int:
    import json

    from pyksm.experiment import qemu_guest as qg
    from pyksm.lab import guest_image

    drive = qg.DriveOptions(aio=args.aio, cache=args.cache, readonly=True)
    workload = qg.workload_from(args.workload, args.path, args.seed, args.count, args.rate)
    workload.command()  # bad paths or numbers fail before anything is built
    recipe = guest_image.DiskRecipe(size_mib=args.size_mib)
    if args.kernel:
        bzimage = Path(args.kernel)
        initrd, disk = guest_image.build_initramfs(), guest_image.build_disk(recipe)
    else:
        image = guest_image.build_all(recipe, err)
        bzimage, initrd, disk = image.bzimage, image.initramfs, image.disk
    err.print(
        f"booting {escape(str(bzimage))} (TCG, {args.memory} MiB, {drive.drive_arg(disk.path)})"
    )
    with qg.Guest(
        bzimage,
        disk.path,
        memory_mib=args.memory,
        initrd=initrd,
        drive=drive,
        nice=args.nice,
        boot_timeout=args.timeout,
    ) as guest:
        err.print(f"READY after {guest.boot_seconds:.2f} s ({guest.ready})")
        if args.drop_caches:
            guest.run(qg.DropCaches(), timeout=args.timeout)
        result = guest.run(
            workload,
            timeout=args.timeout,
            on_progress=lambda p: err.print(
                f"  {p.elapsed_ms / 1000:6.1f} s  {p.read_bytes / (1 << 20):8.1f} MiB"
            ),
        )
    summary = {
        "boot_seconds": round(guest.boot_seconds, 3),
        "guest_uptime_at_ready_s": guest.ready.uptime_ms / 1000 if guest.ready else None,
        "command": result.command,
        "status": result.done.status,
        "files": result.done.files,
        "read_bytes": result.done.read_bytes,
        "host_seconds": round(result.host_seconds, 3),
        "guest_seconds": result.done.elapsed_ms / 1000,
        "mib_per_s": round(result.mib_per_s, 2),
        "aio": drive.aio,
        "cache": drive.cache,
        "memory_mib": args.memory,
        "kernel": guest.ready.kernel if guest.ready else "",
    }
    print(json.dumps(summary, indent=2))
    return 0 if result.ok else 1


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], show: Show | None = None
) -> None:
    """``show(results_dir)`` prints what a run found (pyksm.cli passes the report's)."""
    ep = sub.add_parser("experiment", help="KSM vs KSM++ on built-in workloads").add_subparsers(
        dest="action", required=True
    )
    er = ep.add_parser(
        "run", help="boot the test kernel and run a scenario once per mode (and repetition)"
    )
    er.add_argument("scenario", choices=scenarios.names())
    _common(er)
    sizes = er.add_argument_group(
        "sizes of a real-QEMU scenario (qemu-*; default: the scenario's)",
        "KSM++'s regime: the guests read far more than the boot content they share, "
        "and the linear round is long (e.g. --guest-memory 512 --ballast-mib 2048 "
        "--disk-mib 400).",
    )
    sizes.add_argument(
        "--guest-memory", type=argtypes.positive_int, default=None, help="MiB of RAM per guest"
    )
    sizes.add_argument(
        "--ballast-mib",
        type=argtypes.nonneg_int,
        default=None,
        help="MiB of unique mergeable memory beside the guests (the linear scan's burden)",
    )
    sizes.add_argument(
        "--disk-mib",
        type=argtypes.positive_int,
        default=None,
        help="MiB of the shared disk, 80 %% of it linux source files",
    )
    er.set_defaults(func=cmd_experiment_run, show=show)
    em = ep.add_parser(
        "matrix",
        help="every scenario x mode x repetition, one VM boot per scenario",
    )
    em.add_argument(
        "--scenarios",
        required=True,
        type=argtypes.checked(scenario_names),
        help=f"comma list of {', '.join(scenarios.names())}, or all (the ledger ones)",
    )
    _common(em)
    em.set_defaults(func=cmd_experiment_matrix, show=show)

    from pyksm.experiment.qemu_guest import AIO_MODES, CACHE_MODES, WORKLOADS

    eq = ep.add_parser(
        "qemu-guest",
        help="boot one real QEMU guest on this machine (guest kernel, busybox agent, shared "
        "ext4 disk; TCG) and time one read workload",
    )
    eq.add_argument("--workload", "-w", choices=WORKLOADS, default="tar")
    eq.add_argument("--path", default=".", help="tree on the disk (default: all of it)")
    eq.add_argument("--seed", type=argtypes.nonneg_int, default=1, help="random: order seed")
    eq.add_argument("--count", type=argtypes.nonneg_int, default=0, help="random: files (0: all)")
    eq.add_argument(
        "--rate", type=argtypes.nonneg_int, default=0, help="random: files/s at most (0: unpaced)"
    )
    eq.add_argument("--aio", choices=AIO_MODES, default="threads")
    eq.add_argument("--cache", choices=CACHE_MODES, default="writeback")
    eq.add_argument("--memory", "-m", type=argtypes.positive_int, default=128, help="MiB")
    eq.add_argument("--size-mib", type=argtypes.positive_int, default=256, help="disk size")
    eq.add_argument("--kernel", "-k", type=argtypes.existing_file, help="bzImage (default: guest)")
    eq.add_argument(
        "--no-drop-caches",
        dest="drop_caches",
        action="store_false",
        help="keep the guest's page cache before the workload",
    )
    eq.add_argument("--nice", type=int, default=10, help="QEMU's niceness (default 10)")
    eq.add_argument(
        "--timeout", "-t", type=argtypes.positive_float, default=600.0, help="seconds per step"
    )
    eq.set_defaults(func=cmd_experiment_qemu_guest)

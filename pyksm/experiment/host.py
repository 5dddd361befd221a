"""Run an experiment from the host: boot the test kernel once and run the
scenario's modes, every repetition of each, inside it (``pyksm experiment
run`` and ``matrix``; the runner interleaves the modes across repetitions)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from pyksm.errors import PyksmError
from pyksm.experiment import hostinfo, runner, scenarios
from pyksm.experiment.qemu_scenarios import QemuScenario, QemuSizes
from pyksm.lab import build as kbuild
from pyksm.lab import guest_image, vm
from pyksm.terminal import escape

# Per run, besides its measured duration: unmerge (up to 120 s), the guests'
# boot, the collector's attach (bcc compiles; up to its 600 s deadline under
# TCG on a loaded host), the warm-up rounds and the guests' stop. Sampling may
# run late by a few percent on a loaded host. Once per VM: boot and the image.
PER_RUN_S = 600.0
LATE = 0.05
BOOT_S = 300.0


def vm_timeout(runs: int, duration: float) -> float:
    """Seconds the VM may take for ``runs`` runs (modes x repetitions) of
    ``duration`` seconds each: a bound for a hung run, not an estimate."""
    return runs * (duration * (1 + LATE) + PER_RUN_S) + BOOT_S


def run(
    scenario: str,
    modes: list[str],
    duration: float | None,
    scan_rate: str,
    outdir: Path,
    console: Console,
    kernel: kbuild.KernelBuild | None = None,
    warm_up: int = runner.WARM_ROUNDS,
    trace_hints: bool = False,
    repeat: int = 1,
    visit_cost: bool = False,
    icount: bool = False,
    sizes: QemuSizes | None = None,
) -> Path:
    """``icount``: the test VM's clock counts guest instructions, on one vCPU
    (vm.VmRequest.icount), so ksmd's CPU figures measure its work alone.
    ``sizes``: a real-QEMU scenario's guest RAM, ballast and disk for this run."""
    sizes = sizes or QemuSizes()
    sc = runner.sized(scenarios.lookup(scenario), sizes)
    dur = scenarios.check_duration(sc.duration_s if duration is None else duration)
    plan = runner.schedule(modes, repeat)
    runner.parse_scan_rate(scan_rate)
    if warm_up < 0:
        raise PyksmError(f"--warm-up {warm_up}: rounds must be >= 0")
    for m in modes:
        runner.mode_config(m)
    if isinstance(sc, QemuScenario):
        runner.refuse_for_real_qemu(
            sc.name, trace_hints=trace_hints, visit_cost=visit_cost, icount=icount
        )
    kernel = kernel or kbuild.build(kbuild.BuildRequest(), console)
    outdir.mkdir(parents=True, exist_ok=True)
    real = _guest_image(sc, outdir, console)
    # Real guests boot in every run (nested TCG): their boot deadlines on top.
    boot_s = len(plan) * sc.step_budget_s(0) if isinstance(sc, QemuScenario) else 0.0
    reps = f", {repeat} repetitions interleaved" if repeat > 1 else ""
    reps += ", instruction-counted clock" if icount else ""
    console.print(
        f"experiment [bold]{sc.name}[/]: modes {', '.join(modes)}{reps}, {dur:.0f} s each, "
        f"scan {scan_rate} (pages:ms), kernel {kernel.release} → {outdir / sc.name}"
    )
    cmd = [
        sys.executable,
        "-m",
        "pyksm.experiment.runner",
        sc.name,
        str(outdir),
        "--modes",
        ",".join(modes),
        "--duration",
        str(dur),
        "--scan-rate",
        scan_rate,
        "--warm-up",
        str(warm_up),
        "--repeat",
        str(repeat),
        *(["--trace-hints"] if trace_hints else []),
        *(["--visit-cost"] if visit_cost else []),
        *(["--guest-image", str(real)] if real else []),
        *sizes.args(),
    ]
    load_before = os.getloadavg()[0]
    res = vm.run(
        vm.VmRequest(
            bzimage=kernel.bzimage,
            command=cmd,
            memory="4G",
            cpus=2,
            outdir=outdir,
            # icount: a busy guest second takes a few host seconds
            timeout=(vm_timeout(len(plan), dur) + boot_s) * (3 if icount else 1),
            icount=icount,
        )
    )
    if (outdir / sc.name).is_dir():  # the runner made it: record what it ran on
        try:
            hostinfo.save(outdir / sc.name, hostinfo.probe(res.accel, load_before))
        except OSError as e:  # a full disk costs the record, not the results
            console.print(f"[yellow]could not write {hostinfo.FILE}: {escape(str(e))}[/]")
    if not res.ok:
        from pyksm.lab.cli import report_vm_result

        report_vm_result(res)
        if (outdir / sc.name / "config.json").exists():
            console.print(f"[yellow]partial results kept in {outdir / sc.name}[/]")
        raise PyksmError(
            f"experiment {sc.name} failed (exit {res.exit_code})",
            hint=f"console: {res.console_log}, output: {res.output_log}",
        )
    return outdir / sc.name


def _guest_image(
    sc: scenarios.Scenario | QemuScenario, outdir: Path, console: Console
) -> Path | None:
    """For a real-QEMU scenario: build (or take from the cache) the guest
    image on the host, where the cache is writable, and save where the runner
    in the test VM reads it; None for the ledger scenarios."""
    if not isinstance(sc, QemuScenario):
        return None
    image = guest_image.build_all(sc.disk, console)
    path = outdir / f"{sc.name}.guest-image.json"
    image.save(path)
    console.print(
        f"guest image: {image.kernel_release}, disk {image.disk.size_mib} MiB "
        f"({image.disk.files} files, {image.disk.file_bytes / 2**20:.0f} MiB)"
    )
    return path


def run_matrix(
    names: list[str],
    modes: list[str],
    duration: float | None,
    scan_rate: str,
    outdir: Path,
    console: Console,
    warm_up: int = runner.WARM_ROUNDS,
    trace_hints: bool = False,
    repeat: int = 1,
    visit_cost: bool = False,
    icount: bool = False,
) -> list[Path]:
    """Every scenario in turn, one VM boot each (the kernel is built once).
    A scenario that fails is reported and the next one runs; the failures
    are raised together at the end, after the others' results are kept."""
    for name in names:
        sc = scenarios.lookup(name)
        scenarios.check_duration(sc.duration_s if duration is None else duration)
    runner.schedule(modes, repeat)
    runner.parse_scan_rate(scan_rate)
    kernel = kbuild.build(kbuild.BuildRequest(), console)
    done: list[Path] = []
    failed: list[str] = []
    for name in names:
        try:
            path = run(
                name,
                modes,
                duration,
                scan_rate,
                outdir,
                console,
                kernel,
                warm_up=warm_up,
                trace_hints=trace_hints,
                repeat=repeat,
                visit_cost=visit_cost,
                icount=icount,
            )
            done.append(path)
        except PyksmError as e:
            console.print(f"[red]{escape(name)}: {escape(str(e))}[/]", highlight=False)
            failed.append(name)
    if failed:
        raise PyksmError(
            f"experiment matrix: {len(failed)} of {len(names)} scenarios failed "
            f"({', '.join(failed)})",
            hint=f"results of the others: {', '.join(str(p) for p in done) or 'none'}",
        )
    return done

"""Run an experiment from the host: boot the test kernel and run the
scenario's modes inside it (``pyksm experiment run``)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from pyksm.errors import PyksmError
from pyksm.experiment import runner, scenarios
from pyksm.lab import build as kbuild
from pyksm.lab import vm


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
) -> Path:
    sc = scenarios.get(scenario)
    runner.parse_scan_rate(scan_rate)
    if warm_up < 0:
        raise PyksmError(f"--warm-up {warm_up}: rounds must be >= 0")
    for m in modes:
        runner.mode_config(m)
    kernel = kernel or kbuild.build(kbuild.BuildRequest(), console)
    outdir.mkdir(parents=True, exist_ok=True)
    dur = duration or sc.duration_s
    console.print(
        f"experiment [bold]{sc.name}[/]: modes {', '.join(modes)}, {dur:.0f} s each, "
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
        *(["--trace-hints"] if trace_hints else []),
    ]
    res = vm.run(
        vm.VmRequest(
            bzimage=kernel.bzimage,
            command=cmd,
            memory="4G",
            cpus=2,
            outdir=outdir,
            timeout=len(modes) * (dur + 240) + 300,
        )
    )
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

"""``make demo`` / ``pyksm demo``: the main job on its built-in default.

Build the patched test kernel (cached), boot it, run the kernel-build
scenario once with plain KSM and once with KSM++ (100 pages / 20 ms), write
the merge report to ./pyksm-report/ and print the summary.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pyksm.experiment import host
from pyksm.report import dataset, render

SCENARIO = "kernel-build"
MODES = ["ksm", "ksm++"]


def run(outdir: Path, out: Console, err: Console, duration: float | None = None) -> int:
    results = host.run(SCENARIO, MODES, duration, "100:20", outdir, err)
    exps = [dataset.load(results)]
    render.terminal_summary(exps, out)
    index = render.write(exps, Path("pyksm-report").resolve())
    err.print(f"report: {index}  (PNGs and metrics.json beside it; results in {results})")
    return 0

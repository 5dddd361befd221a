"""``make demo`` / ``pyksm demo``: the main job on its built-in default.

Build the patched test kernel (cached), boot it, run the kernel-build
scenario once with plain KSM and once with KSM++ (100 pages / 20 ms), write
the merge report to ./pyksm-report/ and print the summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from pyksm import argtypes
from pyksm.experiment import scenarios
from pyksm.terminal import err, escape, out

SCENARIO = "kernel-build"
MODES = ["ksm", "ksm++"]


def run(outdir: Path, out: Console, err: Console, duration: float | None = None) -> int:
    # Imported here: building the CLI's parser must not load matplotlib.
    from pyksm.experiment import host
    from pyksm.report import dataset, render

    results = host.run(SCENARIO, MODES, duration, "100:20", outdir, err)
    exps = [dataset.load(results)]
    render.terminal_summary(exps, out)
    index = render.write(exps, Path("pyksm-report").resolve())
    err.print(
        f"report: {escape(str(index))}  (PNGs and metrics.json beside it; "
        f"results in {escape(str(results))})"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run(Path(args.outdir).resolve(), out, err, args.duration)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser("demo", help="KSM vs KSM++ on kernel-build, report in ./pyksm-report")
    d.add_argument("--outdir", "-o", type=argtypes.output_dir, default="pyksm-results")
    d.add_argument(
        "--duration",
        type=argtypes.checked(scenarios.parse_duration),
        default=None,
        help="seconds per mode",
    )
    d.set_defaults(func=cmd_demo)

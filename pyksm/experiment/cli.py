"""``pyksm experiment run`` (registered by pyksm.cli).

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
from pyksm.terminal import err, escape

__all__ = ["modes", "register"]

Show = Callable[[Path], None]


def modes(text: str) -> list[str]:
    """A comma list of modes (MODE or MODE@PAGES:MS), each one known."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise PyksmError(f"no modes in {text!r}: give a comma list of {', '.join(runner.MODES)}")
    for m in names:
        runner.mode_config(m)
    return names


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
    )
    if args.show is not None:
        args.show(path)
    err.print(f"results: {escape(str(path))}  (pyksm report {escape(str(path))})")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], show: Show | None = None
) -> None:
    """``show(results_dir)`` prints what a run found (pyksm.cli passes the report's)."""
    ep = sub.add_parser("experiment", help="KSM vs KSM++ on built-in workloads").add_subparsers(
        dest="action", required=True
    )
    er = ep.add_parser("run", help="boot the test kernel and run a scenario once per mode")
    er.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    er.add_argument(
        "--modes",
        default="ksm,ksm++",
        type=argtypes.checked(modes),
        help=f"comma list of {', '.join(runner.MODES)}; MODE@PAGES:MS gives a mode its own scan rate",
    )
    er.add_argument(
        "--duration", type=argtypes.positive_float, default=None, help="seconds per mode"
    )
    er.add_argument(
        "--scan-rate",
        default="100:20",
        type=argtypes.checked(lambda t: (runner.parse_scan_rate(t), t)[1]),
        help="PAGES:MILLISECONDS (default 100:20)",
    )
    er.add_argument(
        "--warm-up",
        type=argtypes.nonneg_int,
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
    er.add_argument("--outdir", "-o", type=argtypes.output_dir, default="pyksm-results")
    er.set_defaults(func=cmd_experiment_run, show=show)

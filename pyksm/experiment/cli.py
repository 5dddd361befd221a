"""``pyksm experiment run`` and ``matrix`` (registered by pyksm.cli).

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

__all__ = ["modes", "register", "scenario_names"]

Show = Callable[[Path], None]


def _once(names: list[str], what: str) -> list[str]:
    for n in names:
        if names.count(n) > 1:
            raise PyksmError(f"{what} {n} is given twice")
    return names


def modes(text: str) -> list[str]:
    """A comma list of modes (MODE or MODE@PAGES:MS), each one known, none twice."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise PyksmError(f"no modes in {text!r}: give a comma list of {', '.join(runner.MODES)}")
    for m in names:
        runner.mode_config(m)
    return _once(names, "mode")


def scenario_names(text: str) -> list[str]:
    """A comma list of scenarios (or ``all``), each one known, none twice."""
    known = sorted(scenarios.SCENARIOS)
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return known
    if not names:
        raise PyksmError(f"no scenarios in {text!r}: give a comma list of {', '.join(known)}")
    for n in names:
        if n not in scenarios.SCENARIOS:
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
        repeat=args.repeat,
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
        repeat=args.repeat,
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
        help=f"comma list of {', '.join(runner.MODES)}; MODE@PAGES:MS gives a mode its own scan rate",
    )
    p.add_argument(
        "--repeat",
        type=argtypes.positive_int,
        default=1,
        help="runs of every mode (default 1), interleaved: repetition r runs the modes "
        "rotated by r - 1 (ksm, ksm++ | ksm++, ksm | ...), all in one VM boot",
    )
    p.add_argument("--duration", type=argtypes.positive_float, default=None, help="seconds per run")
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
    p.add_argument("--outdir", "-o", type=argtypes.output_dir, default="pyksm-results")


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
    er.add_argument("scenario", choices=sorted(scenarios.SCENARIOS))
    _common(er)
    er.set_defaults(func=cmd_experiment_run, show=show)
    em = ep.add_parser(
        "matrix",
        help="every scenario x mode x repetition, one VM boot per scenario",
    )
    em.add_argument(
        "--scenarios",
        required=True,
        type=argtypes.checked(scenario_names),
        help=f"comma list of {', '.join(sorted(scenarios.SCENARIOS))}, or all",
    )
    _common(em)
    em.set_defaults(func=cmd_experiment_matrix, show=show)

"""``pyksm report`` (registered by pyksm.cli)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.terminal import err, escape, out

__all__ = ["register", "show_summary"]


def cmd_report(args: argparse.Namespace) -> int:
    from pyksm.report import aggregate, dataset, render

    exps = dataset.find([Path(p) for p in args.results])
    # Once: the bootstrap intervals are most of the report's time.
    stats = [aggregate.summarize(exp) for exp in exps]
    render.terminal_summary(exps, out, stats)
    try:
        index = render.write(exps, Path(args.out), stats)
    except OSError as e:  # a full disk, a directory in a file's place, ...
        where = e.filename or args.out
        raise PyksmError(f"{where}: cannot write the report ({e.strerror or e})") from None
    err.print(f"report: {escape(str(index))} (PNGs and metrics.json beside it)")
    return 0


def show_summary(path: Path) -> None:
    """The terminal summary of one results directory (after ``pyksm experiment run``)."""
    from pyksm.report import dataset, render

    render.terminal_summary([dataset.load(path)], out)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("report", help="merge report (HTML, PNG, summary) from results")
    rp.add_argument("results", nargs="+", help="results directories")
    rp.add_argument("--out", "-o", type=argtypes.output_dir, default="pyksm-report")
    rp.set_defaults(func=cmd_report)

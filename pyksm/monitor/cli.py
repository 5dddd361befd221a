"""``pyksm top`` (registered by pyksm.cli)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.terminal import out

__all__ = ["register"]


def cmd_top(args: argparse.Namespace) -> int:
    from pyksm.kernel import ksm
    from pyksm.monitor import top

    if not ksm.Ksm().available():
        raise PyksmError("/sys/kernel/mm/ksm is missing: this kernel has no KSM (CONFIG_KSM)")
    with contextlib.suppress(KeyboardInterrupt):
        top.run(
            args.interval,
            args.count,
            Path(args.prometheus) if args.prometheus else None,
            out,
            once=args.once,
            listen=args.listen,
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tp = sub.add_parser("top", help="live KSM state, per-process savings and hint rates")
    tp.add_argument(
        "interval",
        nargs="?",
        type=argtypes.positive_float,
        default=2.0,
        help="seconds (default 2)",
    )
    tp.add_argument(
        "count", nargs="?", type=argtypes.positive_int, default=None, help="stop after COUNT"
    )
    tp.add_argument("--once", action="store_true", help="print one table and exit")
    tp.add_argument(
        "--prometheus",
        metavar="FILE",
        type=argtypes.output_file,
        help="also write the metrics to FILE (node_exporter textfile collector)",
    )
    tp.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        type=argtypes.listen_address,
        help="also serve the metrics over HTTP (ADDR defaults to 127.0.0.1)",
    )
    tp.set_defaults(func=cmd_top)

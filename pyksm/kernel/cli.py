"""``pyksm ksm show|set`` (registered by pyksm.cli)."""

from __future__ import annotations

import argparse
import json

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.kernel import ksm
from pyksm.terminal import err, escape, out

__all__ = ["assignment", "register"]


def assignment(item: str) -> tuple[str, str]:
    """KNOB=VALUE for a knob this kernel has and lets write; VALUE not empty."""
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise PyksmError(f"expected KNOB=VALUE, got {item!r}")
    if "/" in name:
        raise PyksmError(f"{name!r} is not a KSM knob: knob names have no '/'")
    knob = ksm.KNOBS.get(name)
    if knob is None:
        writable = ", ".join(n for n, k in ksm.KNOBS.items() if k.writable)
        raise PyksmError(f"unknown KSM knob {name!r}: one of {writable}")
    if not knob.writable:
        raise PyksmError(f"ksm/{name} is a read-only counter")
    if not value.strip():
        raise PyksmError(f"{name}=: an empty value")
    k = ksm.Ksm()
    if not k.has(name):
        if knob.since == "KSM++":
            raise PyksmError(f"ksm/{name} needs the patched KSM++ kernel (pyksm vm run)")
        raise PyksmError(f"this kernel has no ksm/{name} (Linux {knob.since}+)")
    return name, value.strip()


def cmd_ksm_show(args: argparse.Namespace) -> int:
    k = ksm.Ksm()
    if not k.available():
        raise PyksmError("/sys/kernel/mm/ksm is missing: this kernel has no KSM (CONFIG_KSM)")
    state: dict[str, object] = dict(k.state())
    if args.pid:
        state = {"pid": args.pid, **ksm.process_stat(args.pid)}
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"KSM state of pid {args.pid}" if args.pid else "/sys/kernel/mm/ksm")
    table.add_column("name")
    table.add_column("value", justify="right")
    table.add_column("since")
    for name, value in state.items():
        knob = ksm.KNOBS.get(name)
        table.add_row(escape(name), escape(str(value)), knob.since if knob else "")
    out.print(table)
    return 0


def cmd_ksm_set(args: argparse.Namespace) -> int:
    k = ksm.Ksm()
    for name, value in args.assignments:
        k.write(name, value)
        err.print(f"ksm/{name} = {escape(str(k.read(name)))}", highlight=False)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kp = sub.add_parser("ksm", help="KSM knobs and counters").add_subparsers(
        dest="action", required=True
    )
    ks = kp.add_parser("show", help="print KSM's sysfs state (or a process's)")
    ks.add_argument("--pid", "-p", type=argtypes.pid)
    ks.add_argument("--json", action="store_true")
    ks.set_defaults(func=cmd_ksm_show)
    kset = kp.add_parser("set", help="write KSM knobs, e.g. pages_to_scan=100 run=1")
    kset.add_argument(
        "assignments", nargs="+", metavar="KNOB=VALUE", type=argtypes.checked(assignment)
    )
    kset.set_defaults(func=cmd_ksm_set)

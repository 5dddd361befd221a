"""The ``pyksm`` command: assembles the subcommands each package registers.

Every subcommand's parser lives next to its code (``pyksm.<package>.cli``
or the module itself, with a ``register(sub)``); this module only puts them
together, runs the chosen one and turns a PyksmError into one line on
stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import cast

from pyksm import __version__
from pyksm.argtypes import Parser
from pyksm.errors import PyksmError
from pyksm.terminal import err, error_line

EXAMPLES = """examples:
  pyksm kernel build                 # patched test kernel (cached)
  pyksm kernel build --debug         # KASAN, KFENCE, lockdep, DEBUG_VM
  pyksm kernel build --vanilla       # the same config without the KSM++ series
  pyksm kernel build --guest         # the small vanilla kernel of the real-QEMU guests
  pyksm guest-image build            # + busybox agent initramfs + 256 MiB ext4 disk
  pyksm experiment qemu-guest --workload tar --path include   # boot one, time a read
  pyksm vm run -- uname -r           # boot the patched test kernel, run a command
  pyksm vm run --kernel debug --numa -- ./selftest
  pyksm vm scan-log pyksm-out/console.log
"""

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Register]:
    """Each package's ``register``, in the order ``pyksm --help`` lists them."""
    from pyksm import demo
    from pyksm.analysis import cli as analysis_cli
    from pyksm.collect import cli as collect_cli
    from pyksm.experiment import cli as experiment_cli
    from pyksm.kernel import cli as kernel_cli
    from pyksm.lab import cli as lab_cli
    from pyksm.lab import guest_image_cli, vagrant_cli
    from pyksm.monitor import cli as monitor_cli
    from pyksm.report import cli as report_cli

    return [
        lab_cli.register,
        kernel_cli.register,
        collect_cli.register,
        analysis_cli.register,
        vagrant_cli.register,
        guest_image_cli.register,
        lambda sub: experiment_cli.register(sub, show=report_cli.show_summary),
        report_cli.register,
        monitor_cli.register,
        demo.register,
    ]


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="pyksm",
        description="KSM++: I/O hints for Linux KSM — lab, probes, analysis, reports.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"pyksm {__version__}")
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        p.add_subparsers(dest="group", required=True),
    )
    for register in _registrars():
        register(sub)
    return p


def _terminated(signum: int, _frame: object) -> None:
    # SIGTERM unwinds like ^C: builds kill make, VMs are torn down, traces flush.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args))
    except PyksmError as e:
        err.print(error_line(str(e), e.hint), highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("pyksm: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

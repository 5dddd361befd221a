"""``pyksm vagrant box|up|ssh|run|status|destroy``: the Vagrant lab from the host.

See :mod:`pyksm.lab.vagrant` for how the pieces fit and the top-level
``Vagrantfile`` for the ``PYKSM_VAGRANT_*`` settings.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import console as kconsole
from pyksm.lab import vagrant as vg
from pyksm.terminal import err

EXAMPLES = """examples:
  pyksm vagrant box                      # build + add the box pyksm/debian12 (cached)
  pyksm vagrant up                       # boot the patched test kernel in the VM
  PYKSM_VAGRANT_KERNEL=vanilla pyksm vagrant up
  pyksm vagrant ssh -- 'uname -r; cat /sys/kernel/mm/ksm/hint_capacity'
  pyksm vagrant run --results out/ -- pyksm ksm show --json
  pyksm vagrant destroy                  # nothing left running
"""


def _say(msg: str) -> None:
    err.print(f"[bold]vagrant:[/] {msg}", highlight=False)


def _settings() -> vg.Settings:
    return vg.parse_settings(os.environ)


def _require_box(settings: vg.Settings) -> None:
    if not vg.box_added(settings.box):
        raise PyksmError(f"the Vagrant box {settings.box} is not added", hint="pyksm vagrant box")


def _command(args: argparse.Namespace) -> list[str]:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return command


def cmd_box(args: argparse.Namespace) -> int:
    vg.check_tools()
    script = kbuild.repo_root() / "vm-images" / "build-vagrant-box.sh"
    t0 = time.monotonic()
    proc = subprocess.run([str(script), *(["--force"] if args.force else [])], check=False)
    if proc.returncode != 0:
        raise PyksmError(f"building the box failed (exit {proc.returncode})", hint=str(script))
    _say(f"box ready in {time.monotonic() - t0:.0f} s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    vg.check_tools()
    settings = _settings()
    resolved = vg.resolve(settings)  # kernel built? KVM or TCG?
    _require_box(settings)
    vg.start_libvirtd(_say)
    vg.refresh_box_volume(settings.box, _say)
    _say(
        f"kernel {resolved.release or resolved.source_bzimage}, {resolved.driver} "
        f"({resolved.accel_reason}), {resolved.memory} MiB, {resolved.cpus} CPUs; "
        f"console log {resolved.console_log}"
    )
    t0 = time.monotonic()
    proc = vg.vagrant(["up", "--provider=libvirt", *(["--provision"] if args.provision else [])])
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise PyksmError(
            f"vagrant up failed (exit {proc.returncode}) after {took:.0f} s",
            hint=f"tail {resolved.console_log}",
        )
    reports = console_reports(Path(resolved.console_log))
    for rep in reports:
        err.print(
            f"[bold red]kernel {rep.kind} report[/] ({resolved.console_log} line {rep.line}):"
        )
        err.print(rep.text, markup=False, highlight=False)
    _say(f"up in {took:.0f} s; next: pyksm vagrant ssh")
    return 125 if reports else 0


def console_reports(log: Path) -> list[kconsole.Report]:
    """Kernel bug reports (oops, BUG, KASAN, lockdep, WARN...) in the VM's serial console."""
    try:
        return kconsole.scan(log.read_text(errors="replace"))
    except OSError:
        return []


def cmd_ssh(args: argparse.Namespace) -> int:
    vg.require_libvirtd()
    command = _command(args)
    extra = ["-c", " ".join(command)] if command else []
    return vg.vagrant(["ssh", *extra]).returncode


def cmd_run(args: argparse.Namespace) -> int:
    command = _command(args)
    if not command:
        raise PyksmError("no command given: pyksm vagrant run [--results DIR] -- CMD ...")
    vg.require_libvirtd()
    guest_dir = f"/home/vagrant/pyksm-results/{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.no_sync:
        sync = vg.vagrant(["rsync"])
        if sync.returncode != 0:
            raise PyksmError("vagrant rsync (checkout -> /vagrant) failed", hint="pyksm vagrant up")
    t0 = time.monotonic()
    proc = vg.vagrant(["ssh", "-c", vg.guest_command(command, guest_dir)])
    took = time.monotonic() - t0
    host_dir = Path(args.results).resolve()
    vg.fetch_results(guest_dir, host_dir)
    _say(f"command exit {proc.returncode} in {took:.0f} s; results in {host_dir}")
    return proc.returncode


def cmd_status(args: argparse.Namespace) -> int:
    vg.check_tools(plugins=False)
    _say(vg.libvirtd_state().describe())
    try:
        resolved = vg.resolve(_settings())
        _say(f"kernel {resolved.source_bzimage} ({resolved.release}), domain {resolved.driver}")
    except PyksmError as e:
        _say(f"[red]{e}[/] (fix: {e.hint})")
    settings = _settings()
    _say(f"box {settings.box}: {'added' if vg.box_added(settings.box) else 'not added'}")
    if vg.libvirtd_state().running:
        return vg.vagrant(["status"]).returncode
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    state = vg.libvirtd_state()
    if state.running:
        vg.require_libvirtd()
        proc = vg.vagrant(["destroy", "-f"])
        if proc.returncode != 0:
            raise PyksmError(f"vagrant destroy failed (exit {proc.returncode})")
        if vg.domain_running():
            raise PyksmError(f"libvirt domain {vg.DOMAIN} still running after destroy")
    if not args.keep_libvirtd:
        vg.stop_libvirtd(_say)
    _say("nothing left running")
    return 0


def register(sub: Any) -> None:
    """Add ``pyksm vagrant ...`` to the top-level parser's subparsers."""
    vp = sub.add_parser(
        "vagrant",
        help="the Vagrant lab: Debian VM on a pyksm kernel",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="action", required=True)
    b = vp.add_parser("box", help="build and add the box pyksm/debian12 (cached)")
    b.add_argument("--force", action="store_true", help="rebuild everything")
    b.set_defaults(func=cmd_box)
    u = vp.add_parser("up", help="start libvirtd in its netns and `vagrant up`")
    u.add_argument("--provision", action="store_true", help="re-run provisioning")
    u.set_defaults(func=cmd_up)
    s = vp.add_parser("ssh", help="`vagrant ssh` (-- CMD runs one command)")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_ssh)
    r = vp.add_parser(
        "run",
        help="run CMD in /vagrant as root; copy $PYKSM_RESULTS back to --results",
    )
    r.add_argument(
        "--results",
        "-r",
        type=argtypes.output_dir,
        default="pyksm-out/vagrant",
        help="host directory",
    )
    r.add_argument("--no-sync", action="store_true", help="skip `vagrant rsync` first")
    r.add_argument("command", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)
    st = vp.add_parser("status", help="libvirtd, kernel, box and VM state")
    st.set_defaults(func=cmd_status)
    d = vp.add_parser("destroy", help="`vagrant destroy -f`, stop libvirtd, remove the netns")
    d.add_argument("--keep-libvirtd", action="store_true")
    d.set_defaults(func=cmd_destroy)

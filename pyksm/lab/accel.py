"""Choose KVM or TCG: use KVM only when a quick probe shows it really works.

``/dev/kvm`` may exist while nested guests hang, so the probe boots the given
kernel under KVM with no root filesystem; a working KVM panics and exits in a
second or two, a broken one hangs until the probe's timeout. The verdict is
cached per host boot (``/proc/sys/kernel/random/boot_id``).
``PYKSM_ACCEL=kvm|tcg`` overrides the probe.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from pyksm.cache import cache_root

PROBE_TIMEOUT = 20.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def panic_boot_argv(bzimage: Path, kvm: bool, memory: str = "256M", cpus: int = 1) -> list[str]:
    """QEMU booting ``bzimage`` with no root: it panics and QEMU exits."""
    return [
        "qemu-system-x86_64",
        "-accel",
        "kvm" if kvm else "tcg",
        *(["-cpu", "host"] if kvm else []),
        "-m",
        memory,
        "-smp",
        str(cpus),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
        "-kernel",
        str(bzimage),
        "-append",
        "console=ttyS0 panic=-1 rdinit=/nonexistent root=/dev/nonexistent",
    ]


def probe_kvm(bzimage: Path, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot ``bzimage`` under KVM until it panics; (works, reason)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm missing or not accessible"
    argv = panic_boot_argv(bzimage, kvm=True, memory="256M")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"KVM guest did not finish booting within {timeout:.0f} s (nested KVM hang)"
    except OSError as err:
        return False, f"cannot run qemu-system-x86_64: {err.strerror}"
    took = time.monotonic() - t0
    if "Kernel panic" in proc.stdout or "Linux version" in proc.stdout:
        return True, f"KVM guest booted to panic in {took:.1f} s"
    return False, f"KVM guest produced no kernel output (qemu exit {proc.returncode})"


def use_kvm(bzimage: Path) -> tuple[bool, str]:
    """Cached verdict for this host boot; honours ``PYKSM_ACCEL``."""
    forced = os.environ.get("PYKSM_ACCEL", "").lower()
    if forced in ("kvm", "tcg"):
        return forced == "kvm", f"PYKSM_ACCEL={forced}"
    cache = cache_root() / "accel.json"
    try:
        data = json.loads(cache.read_text())
        if data.get("boot_id") == _boot_id():
            return bool(data["kvm"]), str(data["reason"]) + " (cached)"
    except (OSError, ValueError, KeyError):
        pass
    ok, reason = probe_kvm(bzimage)
    cache.write_text(json.dumps({"boot_id": _boot_id(), "kvm": ok, "reason": reason}))
    return ok, reason

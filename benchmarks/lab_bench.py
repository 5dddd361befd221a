"""Lab speed: cached-build lookup, and boot-to-command time under virtme-ng
against a bare QEMU boot of the same kernel to its first panic (same run)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from pyksm.lab import accel, vm
from pyksm.lab import build as kbuild


def _bare_boot(bzimage: Path, kvm: bool) -> float:
    argv = accel.panic_boot_argv(bzimage, kvm, memory="2G", cpus=2)
    t0 = time.monotonic()
    subprocess.run(argv, capture_output=True, timeout=120)
    return time.monotonic() - t0


def run(console: Console) -> dict[str, Any]:
    req = kbuild.BuildRequest()
    kernel = kbuild.build(req, console)
    t0 = time.monotonic()
    for _ in range(5):
        kbuild.build(req, console)
    cached = (time.monotonic() - t0) / 5
    kvm, _ = accel.use_kvm(kernel.bzimage)
    bare = min(_bare_boot(kernel.bzimage, kvm) for _ in range(2))
    boots = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):
            res = vm.run(vm.VmRequest(bzimage=kernel.bzimage, command=["true"], outdir=Path(tmp)))
            boots.append(res.seconds)
    boot = min(boots)
    return {
        "kernel": kernel.release,
        "accel": "kvm" if kvm else "tcg",
        "metrics": [
            {
                "name": "cached kernel build lookup",
                "value": cached,
                "unit": "s",
                "goal": "< 2 s",
                "met": cached < 2.0,
            },
            {
                "name": "vng boot-to-command (true)",
                "value": boot,
                "unit": "s",
                "baseline": bare,
                "ratio": boot / bare,
                "goal": "ratio to bare boot-to-panic, informational",
            },
        ],
    }

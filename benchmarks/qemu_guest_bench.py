"""Real-QEMU guest speed on this machine (TCG, not nested): boot time of the
guest kernel to the agent's READY, and the guest's read throughput from its
shared ext4 disk (the default 256 MiB linux-source image) for each drive mode.

One boot per drive mode (``QEMU_GUEST_MODES``, default
``threads:writeback,native:none,io_uring:none``), one QEMU at a time under
``nice -n 10``, 128 MiB of guest RAM; in each boot: drop caches, ``tar`` of
the whole tree, drop caches, ``cat`` (find | xargs cat) of include/. Times
are host seconds; read bytes are what the guest's block layer read.
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console

from pyksm.experiment import qemu_guest as qg
from pyksm.lab import guest_image

MODES = os.environ.get("QEMU_GUEST_MODES", "threads:writeback,native:none,io_uring:none")


def run(console: Console) -> dict[str, Any]:
    image = guest_image.build_all(console=console)
    metrics: list[dict[str, Any]] = []
    for mode in MODES.split(","):
        aio, _, cache = mode.partition(":")
        drive = qg.DriveOptions(aio=aio, cache=cache or "writeback", readonly=True)
        with qg.Guest.of_image(image, drive, boot_timeout=180) as guest:
            results = {}
            for workload in (qg.Tar("."), qg.Cat("include")):
                guest.run(qg.DropCaches(), timeout=60)
                results[workload.command()] = guest.run(workload, timeout=900)
        console.print(f"{mode}: boot {guest.boot_seconds:.2f} s")
        metrics.append(
            {"name": f"boot to READY ({mode})", "value": guest.boot_seconds, "unit": "s"}
        )
        for cmd, r in results.items():
            console.print(
                f"  {cmd}: {r.done.files} files, {r.done.read_bytes / 2**20:.1f} MiB in "
                f"{r.host_seconds:.2f} s = {r.mib_per_s:.2f} MiB/s (status {r.done.status})"
            )
            metrics.append(
                {"name": f"{cmd} read throughput ({mode})", "value": r.mib_per_s, "unit": "MiB/s"}
            )
    return {
        "kernel": str(image.bzimage),
        "disk": {"size_mib": image.disk.size_mib, "files": image.disk.files,
                 "file_bytes": image.disk.file_bytes},
        "metrics": metrics,
    }  # fmt: skip

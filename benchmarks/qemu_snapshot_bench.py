"""The snapshot oracle on real QEMU guests, on this machine (TCG, not nested).

Two guests of qemu-kernel-build's shape (192 MiB, the scenario's shared
disk, aio=threads), booted one after the other (one QEMU at a time, under
``nice -n 19`` by default: ``QEMU_SNAPSHOT_NICE``; the tar's deadline:
``QEMU_SNAPSHOT_TAR_S``); each tars the tree, then
its RAM is snapshotted (pyksm.analysis.snapshot) and it powers off. The two
snapshots together are what the oracle of the scenario sees at one moment
after both guests read the tree: the opportunities between the guests
(equal page-cache pages), the part of them that are disk blocks, and the
time one snapshot of one guest takes. Host KSM is not touched.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from rich.console import Console

from pyksm.analysis.series import SnapshotSeries
from pyksm.analysis.snapshot import snapshot_once
from pyksm.experiment import oracle_snapshot as osn
from pyksm.experiment import qemu_guest as qg
from pyksm.experiment.qemu_scenarios import QEMU_SCENARIOS
from pyksm.lab import guest_image

NICE = int(os.environ.get("QEMU_SNAPSHOT_NICE", "19"))
TAR_TIMEOUT_S = float(os.environ.get("QEMU_SNAPSHOT_TAR_S", "600"))
SCENARIO = QEMU_SCENARIOS["qemu-kernel-build"]


def _figures(snaps: list[dict[str, Any]]) -> osn.SnapshotFigures:
    merged = {k: np.concatenate([s[k] for s in snaps]) for k in snaps[0]}
    return osn.figures(SnapshotSeries.build([merged], [0.0]))[0]


def run(console: Console) -> dict[str, Any]:
    image = guest_image.build_all(SCENARIO.disk, console)
    t0 = time.monotonic()
    disk = osn.disk_hashes(image.disk.path)
    disk_s = time.monotonic() - t0
    snaps: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = [
        {"name": "hash the shared disk", "value": disk_s, "unit": "s"},
    ]
    for spec in SCENARIO.guests:
        with qg.Guest.of_image(
            image, SCENARIO.drive, boot_timeout=120, memory_mib=spec.memory_mib, nice=NICE
        ) as g:
            tar = g.run(qg.Tar("."), timeout=TAR_TIMEOUT_S)
            start = time.monotonic()
            s = snapshot_once([g.pid], "mergeable")
            took = time.monotonic() - start
        osn.mark_disk(s["flags"], s["hash"], disk)
        snaps.append(s)
        alone = _figures([s])
        console.print(
            f"{spec.name}: boot {g.boot_seconds:.1f} s, tar {tar.done.files} files "
            f"{tar.done.read_bytes / 2**20:.1f} MiB in {tar.host_seconds:.1f} s; snapshot "
            f"{alone.present} pages in {took:.2f} s; opportunities inside it {alone.opportunities}"
        )
        metrics += [
            {"name": f"boot to READY ({spec.name})", "value": g.boot_seconds, "unit": "s"},
            {"name": f"snapshot of {spec.memory_mib} MiB guest", "value": took, "unit": "s"},
            {"name": f"pages present ({spec.name})", "value": alone.present, "unit": "pages"},
        ]
    both = _figures(snaps)
    inside = sum(_figures([s]).opportunities for s in snaps)
    console.print(
        f"both: {both.opportunities} opportunities ({both.opportunities - inside} between the "
        f"guests), {both.file} of them disk blocks; disk files {image.disk.file_bytes / 2**20:.0f}"
        f" MiB = {image.disk.file_bytes // 4096} pages"
    )
    metrics += [
        {"name": "opportunities (both guests)", "value": both.opportunities, "unit": "pages"},
        {"name": "of them between the guests", "value": both.opportunities - inside,
         "unit": "pages"},
        {"name": "of them disk blocks", "value": both.file, "unit": "pages"},
    ]  # fmt: skip
    return {
        "disk": {"size_mib": image.disk.size_mib, "files": image.disk.files,
                 "file_bytes": image.disk.file_bytes},
        "nice": NICE,
        "metrics": metrics,
    }  # fmt: skip

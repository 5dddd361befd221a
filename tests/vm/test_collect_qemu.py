"""A real QEMU guest (TCG, virtio-blk, aio=threads) traced in record mode on
this machine's own kernel: where do its disk reads land?

Runs on the host (not in the test VM: a nested TCG QEMU does not boot there
in reasonable time); uses the test kernel's bzImage for the guest. ~20 s.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyksm.experiment.qemu_guest import Collector, Guest, coverage, guest_ram, make_disk
from pyksm.lab import build as kbuild
from tests.unit.test_collect_host_bcc import _bcc_usable


@pytest.mark.host_bcc
def test_qemu_guest_reads_land_in_guest_ram_and_are_covered(
    kernel: kbuild.KernelBuild, tmp_path: Path
) -> None:
    reason = _bcc_usable()
    if reason:
        pytest.skip(reason)
    disk = make_disk(tmp_path / "disk.raw", 128)
    qmp = tmp_path / "qmp.sock"
    guest = Guest(kernel.bzimage, disk, memory_mib=256, qmp=qmp)
    try:
        trace = tmp_path / "qemu.trace"
        # QMP names the process (socket peer) and its RAM size.
        col = Collector(["--qmp", str(qmp), "--record", str(trace)], tmp_path / "collect.log")
        guest.command("dd")
        ram = guest_ram(guest.pid, 256)
        stats = col.stop()
    finally:
        guest.close()
    assert len(ram) == 1, ram
    assert stats.targets_seen == [guest.pid]
    assert stats.syscalls == ["pread64", "preadv", "preadv2", "io_submit"]
    assert stats.outside_bytes == 0  # the controller's RAM filter agrees
    c = coverage(trace, guest.pid, ram, os.path.getsize(disk))
    print(c)
    assert c["inside_fraction"] >= 0.99
    assert c["coverage"] >= 0.95

"""Guest I/O modes x probe layers (issue 15, item 4): a real QEMU guest
(128 MiB, nested TCG inside the test VM) per cell drops its caches and tars
its whole disk while ``pyksm collect --qemu --record --layer L`` records; of
the bytes the guest read, the share traced into its RAM must be >= 95 % for
aio=threads (syscalls layer), aio=native with cache=none (syscalls) and
aio=io_uring (vfs layer); aio=io_uring with the syscalls layer is recorded
to show that layer does not reach it. A tar still running at its timeout (a
loaded host) counts, marked PARTIAL, if it read at least half the disk's files.

``PYKSM_COVERAGE_CELLS=aio/cache/layer,...`` picks other cells,
``PYKSM_COVERAGE_DISK_MIB`` the disk's size (default 40: 23 MiB of files; at 32 mke2fs runs out of blocks);
``PYKSM_COVERAGE_JSON=PATH`` keeps the results, ``PYKSM_COVERAGE_TAR_TIMEOUT_S``
shortens the tars' timeout (default 900 s) to cut them short on purpose. One collector per layer, then
all guests boot at once, then each guest tars in turn (see
pyksm/experiment/io_coverage.py). Slow (nested TCG): make vm-qemu, not make test.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from pyksm.experiment import io_coverage
from pyksm.lab import build as kbuild
from tests.vm.conftest import summarize

pytestmark = pytest.mark.nested_qemu


def test_each_guest_io_mode_is_covered_by_the_layer_that_reaches_it(
    kernel: kbuild.KernelBuild, tmp_path: Path
) -> None:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("no qemu-system-x86_64")
    cells = io_coverage.parse_cells(os.environ.get("PYKSM_COVERAGE_CELLS", ""))
    t0 = time.monotonic()
    disk_mib = int(os.environ.get("PYKSM_COVERAGE_DISK_MIB", io_coverage.DISK_MIB))
    # A shorter timeout than the default cuts a tar short on purpose: the
    # partial-cell path, in a real VM.
    tar_timeout = float(os.environ.get("PYKSM_COVERAGE_TAR_TIMEOUT_S", io_coverage.TAR_TIMEOUT_S))
    run = io_coverage.run_in_vm(
        kernel.bzimage, tmp_path, cells, disk_mib=disk_mib, tar_timeout=tar_timeout
    )
    wall = time.monotonic() - t0
    if keep := os.environ.get("PYKSM_COVERAGE_JSON"):
        shutil.copyfile(tmp_path / "io-coverage.json", keep)
    lines = io_coverage.format_table(run.cells)
    print("\n".join(lines))
    summarize(
        f"io-coverage: {len(run.cells)} cells, wall {wall:.0f} s ({run.wall_seconds:.0f} s in "
        f"the VM), {run.qemu}, disk {run.disk.get('size_mib')} MiB "
        f"({run.disk.get('files')} files), guests {run.memory_mib} MiB"
    )
    for line in lines:
        summarize(line)
    assert [r.cell for r in run.cells] == cells
    for r in run.cells:
        if r.expected_to_reach:
            assert r.error is None, f"{r.cell.name}: {r.error}"
            if r.cut_short is None:
                assert r.tar_status == 0 and r.guest_read_bytes > 0, r
            else:  # slow, not unseen: coverage of what it read, at least half its files
                assert r.guest_read_bytes >= run.disk.get("file_bytes", 0) // 2 > 0, r
            assert r.coverage >= io_coverage.COVERED, f"{r.cell.name}: {r.coverage:.3f}"
        elif r.error is None:
            # e.g. io_uring seen by the syscalls layer: it makes no read syscall
            assert r.coverage < io_coverage.COVERED, f"{r.cell.name}: {r.coverage:.3f}"
    by_name = {r.cell.name: r for r in run.cells}
    if (uring := by_name.get("io_uring/writeback/vfs")) is not None:
        assert uring.layer_attached in ("vfs-fentry", "vfs-kprobe")
        assert uring.events_by_probe.get("filemap_read", 0) > 0, uring.events_by_probe

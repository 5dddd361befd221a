"""A real QEMU guest on this machine (TCG, not inside the test VM): the guest
kernel (pyksm kernel build --guest), the busybox agent and a shared ext4 disk
of linux source files. Boots to READY and reads the tree with tar; ~20 s
after the images are built (the kernel build waits for the build lock).
"""

from __future__ import annotations

import shutil

import pytest

from pyksm.experiment import qemu_guest as qg
from pyksm.lab import guest_image
from tests.unit.test_runner_results import children

# kernel/ and mm/ of the linux tree: ~30 MiB of files, a few seconds of tar
RECIPE = guest_image.DiskRecipe(size_mib=64, subdirs=("kernel", "mm"))


@pytest.fixture(scope="module")
def image() -> guest_image.GuestImage:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("no qemu-system-x86_64")
    return guest_image.build_all(RECIPE)


@pytest.mark.host_qemu
def test_guest_boots_and_tar_reads_the_tree_from_disk(image: guest_image.GuestImage) -> None:
    before = children()
    drive = qg.DriveOptions(aio="threads", cache="writeback", readonly=True)
    with qg.Guest.of_image(image, drive, boot_timeout=120) as guest:
        assert guest.ready is not None
        assert guest.ready.disk == "ro" and guest.ready.kernel.endswith("-pyksm-guest")
        guest.run(qg.DropCaches(), timeout=60)
        result = guest.run(qg.Tar("."), timeout=300)
    print(
        f"boot {guest.boot_seconds:.2f} s; tar: {result.done.files} files, "
        f"{result.done.read_bytes / 2**20:.1f} MiB in {result.host_seconds:.2f} s "
        f"({result.mib_per_s:.1f} MiB/s)"
    )
    assert result.ok, result
    assert result.done.files == image.disk.files
    # every file's data came from the disk (the cache was dropped): at least
    # the files' bytes, at most the whole image
    assert image.disk.file_bytes <= result.done.read_bytes <= image.disk.size_mib << 20
    assert guest.proc.returncode == 0  # powered off
    assert children() == before

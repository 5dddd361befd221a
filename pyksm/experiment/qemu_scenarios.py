"""Scenarios with real QEMU guests (``qemu-kernel-build``, ``qemu-apache``,
``qemu-mixed``): the table, no running.

N real ``qemu-system-x86_64`` guests boot the guest image (``pyksm
guest-image build``: guest-only kernel, the busybox agent, an ext4 disk of
linux source files) from one shared disk (virtio-blk, aio=threads, read-only)
and run the agent's workloads on it; beside them a QEMU-like process of
unique mergeable memory (guest.py, no I/O) gives the linear scan a
host-sized burden. Real guests have no content ledger: their oracle is
snapshots of their RAM (``oracle_snapshot.py``). ``qemu_runner.py`` runs
them; the modes, samples and results are those of the ledger scenarios.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from pyksm.errors import PyksmError
from pyksm.experiment import qemu_guest
from pyksm.lab.guest_image import DEFAULT_SUBDIRS, DiskRecipe

__all__ = ["QEMU_SCENARIOS", "QemuGuestSpec", "QemuScenario"]

WORKLOADS = ("tar", "random")


@dataclass(frozen=True)
class QemuGuestSpec:
    name: str
    workload: str  # "tar": a kernel build's walk of the tree; "random": an apache
    memory_mib: int = 192
    path: str = "."  # on the shared disk
    seed: int = 1  # random: the order of the files
    files_per_s: int = 0  # random: the pace (0: as fast as it can)
    start_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise PyksmError(f"{self.name}: workload {self.workload!r}: one of {WORKLOADS}")
        if not 128 <= self.memory_mib <= 512:
            raise PyksmError(f"{self.name}: {self.memory_mib} MiB of RAM: 128 to 512 MiB")

    def files_asked(self, duration: float) -> int:
        """Files a paced random reader reads in ``duration`` (0: unpaced, all)."""
        if self.workload != "random" or not self.files_per_s:
            return 0
        return max(1, math.ceil(self.files_per_s * max(duration - self.start_delay_s, 0.0)))

    def command(self, duration: float) -> qemu_guest.Workload:
        """The agent workload of a run of ``duration`` seconds."""
        if self.workload == "tar":
            return qemu_guest.Tar(self.path)
        return qemu_guest.RandomRead(
            self.path, self.seed, self.files_asked(duration), self.files_per_s
        )


@dataclass(frozen=True)
class QemuScenario:
    name: str
    description: str
    guests: tuple[QemuGuestSpec, ...]
    ballast_mib: int = 768  # unique mergeable memory beside the guests
    disk_mib: int = 96  # the shared disk: linux source files filling 80 % of it
    disk_subdirs: tuple[str, ...] = DEFAULT_SUBDIRS
    duration_s: float = 300.0
    snapshot_interval_s: float = 10.0
    long_lived_s: float = 30.0  # recall counts opportunities that lived this long
    boot_timeout_s: float = 900.0  # per guest; nested TCG in the test VM is slow
    aio: str = "threads"
    cache: str = "writeback"
    guest_nice: int | None = None
    seed: int = 42
    oracle: str = "snapshot"

    def __post_init__(self) -> None:
        if len(self.guests) < 2:
            raise PyksmError(f"{self.name}: at least two guests (sharing is between guests)")
        qemu_guest.DriveOptions(self.aio, self.cache, readonly=True)

    @property
    def disk(self) -> DiskRecipe:
        return DiskRecipe(size_mib=self.disk_mib, subdirs=self.disk_subdirs)

    @property
    def drive(self) -> qemu_guest.DriveOptions:
        return qemu_guest.DriveOptions(self.aio, self.cache, readonly=True)

    def step_budget_s(self, duration: float) -> float:
        """The most one mode of it may take: boots, warm-up, run, stop."""
        return len(self.guests) * self.boot_timeout_s + duration + 900.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# The apache guests' files: linux/kernel of the disk (593 files, 11 MiB read),
# each read once in a random order at a pace a guest keeps under nested TCG;
# both guests end up holding the same hot set, each reaching it in its own order.
APACHE_PATH = "kernel"
APACHE_FILES_S = 2


def _apache(name: str, seed: int, delay: float = 0.0) -> QemuGuestSpec:
    return QemuGuestSpec(
        name,
        "random",
        path=APACHE_PATH,
        seed=seed,
        files_per_s=APACHE_FILES_S,
        start_delay_s=delay,
    )


QEMU_SCENARIOS: dict[str, QemuScenario] = {
    s.name: s
    for s in (
        QemuScenario(
            "qemu-kernel-build",
            "Two real QEMU guests (192 MiB, TCG) tar the same linux source tree from one "
            "shared disk (virtio-blk aio=threads), guest-b 5 s behind; 768 MiB of unique "
            "mergeable memory beside them. Oracle: snapshots of the guests' RAM.",
            (
                QemuGuestSpec("guest-a", "tar"),
                QemuGuestSpec("guest-b", "tar", start_delay_s=5.0),
            ),
        ),
        QemuScenario(
            "qemu-apache",
            "Two real QEMU guests (192 MiB, TCG) read the files of linux/kernel on the shared "
            "disk, each once, each guest in its own random order, 2 files/s; 768 MiB of "
            "unique mergeable memory beside them. Oracle: snapshots of the guests' RAM.",
            (_apache("guest-a", 1), _apache("guest-b", 2, 5.0)),
        ),
        QemuScenario(
            "qemu-mixed",
            "One real QEMU guest tars the shared linux source tree, the other reads the "
            "files of linux/kernel at random (2 files/s): they share what both hold of "
            "kernel/; 768 MiB of unique mergeable memory beside them. Oracle: snapshots "
            "of the guests' RAM.",
            (QemuGuestSpec("guest-a", "tar"), _apache("guest-b", 2, 5.0)),
        ),
    )
}

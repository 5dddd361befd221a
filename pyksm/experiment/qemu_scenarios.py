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
from dataclasses import asdict, dataclass, replace

from pyksm.errors import PyksmError
from pyksm.experiment import qemu_guest
from pyksm.lab.guest_image import DEFAULT_SUBDIRS, DiskRecipe

__all__ = ["QEMU_SCENARIOS", "QemuGuestSpec", "QemuScenario", "QemuSizes", "sized"]

WORKLOADS = ("tar", "random")
# The test VM has 4 GiB (pyksm.experiment.host): the guests and the ballast
# may take 3 GiB of it, the runner, the oracle's snapshots and the kernel the rest.
MAX_GUEST_MEMORY_MIB = 512
MAX_BALLAST_MIB = 2048
MAX_MEMORY_MIB = 3072
MAX_DISK_MIB = 1024


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
        if not 128 <= self.memory_mib <= MAX_GUEST_MEMORY_MIB:
            raise PyksmError(
                f"{self.name}: {self.memory_mib} MiB of RAM: 128 to {MAX_GUEST_MEMORY_MIB} MiB"
            )

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
        if not 0 <= self.ballast_mib <= MAX_BALLAST_MIB:
            raise PyksmError(
                f"{self.name}: ballast of {self.ballast_mib} MiB: 0 to {MAX_BALLAST_MIB} MiB"
            )
        memory = sum(g.memory_mib for g in self.guests) + self.ballast_mib
        if memory > MAX_MEMORY_MIB:
            raise PyksmError(
                f"{self.name}: guests and ballast take {memory} MiB: at most {MAX_MEMORY_MIB} "
                "MiB of the test VM's 4 GiB"
            )
        if not 32 <= self.disk_mib <= MAX_DISK_MIB:
            raise PyksmError(f"{self.name}: disk of {self.disk_mib} MiB: 32 to {MAX_DISK_MIB} MiB")
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


@dataclass(frozen=True)
class QemuSizes:
    """Sizes a run sets for a real-QEMU scenario in place of its own (None:
    the scenario's): every guest's RAM, the ballast of unique mergeable
    memory (how long the linear scan's round is), the shared disk (how much
    the guests can read). ``pyksm experiment run --guest-memory/--ballast-mib/
    --disk-mib``; the runner in the test VM gets the same as ``args()``."""

    guest_memory_mib: int | None = None
    ballast_mib: int | None = None
    disk_mib: int | None = None

    def args(self) -> list[str]:
        out: list[str] = []
        for flag, v in (
            ("--guest-memory", self.guest_memory_mib),
            ("--ballast-mib", self.ballast_mib),
            ("--disk-mib", self.disk_mib),
        ):
            if v is not None:
                out += [flag, str(v)]
        return out

    @property
    def given(self) -> bool:
        return any(v is not None for v in asdict(self).values())


def sized(sc: QemuScenario, sizes: QemuSizes) -> QemuScenario:
    """``sc`` with ``sizes`` in place of its own (checked as the scenario's
    own are); its description says what was changed."""
    if not sizes.given:
        return sc
    memory = sc.guests[0].memory_mib if sizes.guest_memory_mib is None else sizes.guest_memory_mib
    ballast = sc.ballast_mib if sizes.ballast_mib is None else sizes.ballast_mib
    disk = sc.disk_mib if sizes.disk_mib is None else sizes.disk_mib
    changed = ", ".join(
        f"{what} {new_v} MiB (not {old_v})"
        for what, old_v, new_v in (
            ("guest RAM", sc.guests[0].memory_mib, memory),
            ("ballast", sc.ballast_mib, ballast),
            ("disk", sc.disk_mib, disk),
        )
        if old_v != new_v
    )
    guests = sc.guests
    if sizes.guest_memory_mib is not None:
        guests = tuple(replace(g, memory_mib=memory) for g in guests)
    return replace(
        sc,
        guests=guests,
        ballast_mib=ballast,
        disk_mib=disk,
        description=f"{sc.description} Sized for this run: {changed}.",
    )


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

"""qemu_runner.run_mode end to end with stand-ins: a fake ``qemu`` that
speaks the agent's protocol and copies the disk into mergeable memory on
``tar``, and a fake KSM sysfs. The snapshot oracle sees the two guests'
equal disk pages; on a guest that does not boot nothing is left behind."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment import qemu_guest, qemu_runner, runner
from pyksm.experiment.oracle_snapshot import disk_hashes
from pyksm.experiment.qemu_scenarios import QemuGuestSpec, QemuScenario
from pyksm.experiment.results import Diagnosis, read_samples, read_summary
from pyksm.kernel.ksm import MergeFailures
from pyksm.lab import guest_image
from tests.unit.test_runner_results import children, fake_sysfs, open_fds

FAKE_QEMU = """
import mmap, os, sys
disk, mib, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "die":
    sys.exit(1)
m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_MERGEABLE)
for i in range(16):  # the guest's own pages (kernel, programs): unique
    m[i * 4096 : i * 4096 + 16] = os.urandom(16)
print("@pyksm READY agent=1 uptime_ms=5 disk=ro kernel=fake-guest", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] in ("tar", "random") and mode == "hang":
        import time
        time.sleep(600)
    if cmd and cmd[0] in ("tar", "random"):
        data = open(disk, "rb").read()
        m[64 * 4096 : 64 * 4096 + len(data)] = data  # the page cache
        print(f"@pyksm DONE cmd={cmd[0]} status=0 elapsed_ms=1 read_bytes={len(data)} files=3",
              flush=True)
    elif cmd and cmd[0] == "off":
        print("@pyksm BYE", flush=True)
        break
"""
DISK_PAGES = 32


def _scenario() -> QemuScenario:
    return QemuScenario(
        "qemu-test",
        "two fake guests",
        (
            QemuGuestSpec("guest-a", "tar", memory_mib=128),
            QemuGuestSpec("guest-b", "tar", memory_mib=130, start_delay_s=0.5),
        ),
        ballast_mib=4,
        duration_s=4.0,
        snapshot_interval_s=1.0,
        long_lived_s=1.0,
        boot_timeout_s=30.0,
    )


@pytest.fixture
def image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> guest_image.GuestImage:
    k = fake_sysfs(tmp_path / "ksm")
    monkeypatch.setattr(runner.ksm, "Ksm", lambda: k)
    disk = tmp_path / "disk.ext4"
    disk.write_bytes(os.urandom(DISK_PAGES * 4096))
    for name in ("bzImage", "initrd"):
        (tmp_path / name).write_bytes(b"x")
    d = guest_image.DiskImage(disk, "k", 1, "test", ["."], 3, DISK_PAGES * 4096)
    return guest_image.GuestImage(tmp_path / "bzImage", tmp_path / "initrd", d)


def _baseline() -> tuple[set[int], set[str]]:
    """Children and open files now (files other tests left to the collector closed first)."""
    gc.collect()
    return children(), open_fds()


def _fake_qemu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, modes: list[str]) -> None:
    """``modes``: how guest-a (128 MiB) and guest-b (130 MiB) behave; they boot at once."""
    script = tmp_path / "qemu.py"
    script.write_text(FAKE_QEMU)
    by_memory = dict(zip((128, 130), modes, strict=True))

    def argv(bzimage: Path, initrd: Path, disk: Path, memory_mib: int, *a: object) -> list[str]:
        return [sys.executable, str(script), str(disk), str(memory_mib), by_memory[memory_mib]]

    monkeypatch.setattr(qemu_guest, "qemu_argv", argv)


def test_a_mode_of_real_guests_samples_the_snapshot_oracle(
    image: guest_image.GuestImage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_qemu(monkeypatch, tmp_path, ["ok", "ok"])
    # The counters the ledger scenarios are diagnosed by: cow_ksm grows by 2
    # a sample, a hint drop counter stays, 3 hinted merges fail (lru) meanwhile.
    k = runner.ksm.Ksm()
    (k.root / "hints_dropped_age").write_text("4\n")
    cow = iter(range(10, 10_000, 2))
    monkeypatch.setattr(runner, "vmstat", lambda names: {"cow_ksm": next(cow)})
    failed = iter([MergeFailures(refs=1), MergeFailures(refs=1, lru=3)])
    monkeypatch.setattr(k, "merge_failures", lambda: next(failed))
    before, fds = _baseline()
    out = tmp_path / "out"
    disk = disk_hashes(image.disk.path)
    qemu_runner.run_mode(
        _scenario(), runner.mode_config("ksm"), out, 4.0, 100, 20, image, disk, 0, rep=1
    )
    assert children() == before
    assert open_fds() == fds
    assert not list(Path("/dev/shm").glob("pyksm-ballast-ksm.bin"))
    summary = read_summary(out / "summary.json")
    assert summary is not None and summary.oracle == "snapshot"
    v = summary.validation
    assert v is not None and v["snapshots"] >= 2
    # both guests hold the disk's pages: one redundant copy of each, all disk blocks
    last = v["per_snapshot"][-1]
    assert (last["opportunities"], last["file"]) == (DISK_PAGES, DISK_PAGES)
    assert v["precision"] == 1.0 and v["wrong"] == 0
    assert v["long_lived"] >= DISK_PAGES and v["long_lived_recall"] == 0.0  # nothing merged
    samples = read_samples(out / "samples.jsonl")
    assert len(samples) >= 4
    assert max(s.oracle for s in samples) == DISK_PAGES
    assert all(s.pages_sharing == 0 and "sysfs_pages_sharing" in s.counters for s in samples)
    assert {"guest-a", "guest-b", "ballast", "ksmd"} <= set(samples[-1].cpu_ticks)
    stats = summary.guest_stats
    assert [(g["name"], g["done"], g["status"]) for g in stats[:2]] == [
        ("guest-a", True, 0),
        ("guest-b", True, 0),
    ]
    assert [g["name"] for g in summary.guests] == ["guest-a", "guest-b", "ballast"]
    assert summary.io_achieved == [None, None]
    # the report reads each workload's outcome back (the ballast's line is none)
    assert [w.name for w in summary.workloads] == ["guest-a", "guest-b"]
    assert all((w.read_mib_s or 0) > 0 for w in summary.workloads)
    assert json.loads((out / "summary.json").read_text())["oracle"] == "snapshot"
    # diagnosed as the ledger scenarios are: first to last sample, start to end
    assert all("cow_ksm" in s.counters for s in samples)
    grown = samples[-1].counters["cow_ksm"] - samples[0].counters["cow_ksm"]
    assert summary.diagnosis == Diagnosis(cow_ksm=grown, hints_dropped_age=0)
    assert grown == 2 * (len(samples) - 1)
    assert summary.merge_failures == MergeFailures(lru=3).as_dict()


def test_a_guest_that_does_not_boot_leaves_nothing(
    image: guest_image.GuestImage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_qemu(monkeypatch, tmp_path, ["ok", "die"])  # guest-a boots, guest-b does not
    before, fds = _baseline()
    with pytest.raises(PyksmError, match=r"guest-b did not boot: QEMU guest: exited before READY"):
        qemu_runner.run_mode(
            _scenario(), runner.mode_config("ksm"), tmp_path / "o", 4.0, 100, 20, image,
            disk_hashes(image.disk.path), 0,
        )  # fmt: skip
    assert children() == before
    assert open_fds() == fds
    assert not list(Path("/dev/shm").glob("pyksm-ballast-ksm.bin"))


def test_a_failure_mid_run_stops_workloads_guests_and_oracle(
    image: guest_image.GuestImage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_qemu(monkeypatch, tmp_path, ["hang", "hang"])

    def boom(*a: object) -> None:
        raise PyksmError("snapshot oracle failed: boom")

    monkeypatch.setattr(qemu_runner, "_measure", boom)
    (before, fds), threads = _baseline(), threading.active_count()
    with pytest.raises(PyksmError, match="boom"):
        qemu_runner.run_mode(
            _scenario(), runner.mode_config("ksm"), tmp_path / "o", 4.0, 100, 20, image,
            disk_hashes(image.disk.path), 0,
        )  # fmt: skip
    assert children() == before
    assert open_fds() == fds
    assert threading.active_count() == threads  # no workload or oracle thread left

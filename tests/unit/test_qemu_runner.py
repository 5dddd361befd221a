"""qemu_runner.run_mode end to end with stand-ins: a fake ``qemu`` that
speaks the agent's protocol and copies the disk into mergeable memory on
``tar`` (and serves QMP query-blockstats), and a fake KSM sysfs. The
snapshot oracle sees the two guests' equal disk pages; a workload that never
finishes gets a partial throughput from QMP, or none without it; on a guest
that does not boot nothing is left behind."""

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
from pyksm.experiment.results import Diagnosis, WorkloadOutcome, read_samples, read_summary
from pyksm.kernel.ksm import MergeFailures
from pyksm.lab import guest_image
from pyksm.report import metrics
from tests.unit.test_runner_results import children, fake_sysfs, open_fds

BOOT_BYTES = 3 * 4096  # what the fake guests read from their disk before a workload
FAKE_QEMU = """
import json, mmap, os, socket, sys, threading, time
disk, mib, mode, qmp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if mode == "die":
    sys.exit(1)
m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
m.madvise(mmap.MADV_MERGEABLE)
for i in range(16):  # the guest's own pages (kernel, programs): unique
    m[i * 4096 : i * 4096 + 16] = os.urandom(16)
rd_bytes = [BOOT_BYTES]  # what QEMU read from the disk for the guest (query-blockstats)

def monitor(srv):  # QEMU's QMP: one client at a time; a JSON stream, not lines
    while True:
        conn, _ = srv.accept()
        with conn:
            talk(conn)

def talk(conn):
    greeting = {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": ""},
                "capabilities": []}
    conn.sendall(json.dumps({"QMP": greeting}).encode() + b"\\r\\n")
    decoder, buf = json.JSONDecoder(), ""
    while data := conn.recv(4096):
        buf += data.decode()
        while buf.strip():
            try:
                msg, end = decoder.raw_decode(buf.lstrip())
            except json.JSONDecodeError:
                break
            buf = buf.lstrip()[end:]
            ret = {}
            if msg["execute"] == "query-blockstats":
                ret = [{"device": "virtio0", "stats": {"rd_bytes": rd_bytes[0]}}]
            reply = {"return": ret, **({"id": msg["id"]} if "id" in msg else {})}
            conn.sendall(json.dumps(reply).encode() + b"\\r\\n")

if qmp != "-":  # like -qmp unix:PATH,server=on,wait=off: listening before the guest runs
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(qmp)
    srv.listen(1)
    threading.Thread(target=monitor, args=(srv,), daemon=True).start()
print("@pyksm READY agent=1 uptime_ms=5 disk=ro kernel=fake-guest", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd and cmd[0] in ("tar", "random"):
        data = open(disk, "rb").read()
        if mode == "hang":  # reads half the disk, then never finishes
            rd_bytes[0] += len(data) // 2
            time.sleep(600)
        rd_bytes[0] += len(data)
        m[64 * 4096 : 64 * 4096 + len(data)] = data  # the page cache
        print(f"@pyksm DONE cmd={cmd[0]} status=0 elapsed_ms=1 read_bytes={len(data)} files=3",
              flush=True)
    elif cmd and cmd[0] == "off":
        print("@pyksm BYE", flush=True)
        break
""".replace("BOOT_BYTES", str(BOOT_BYTES))
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


def _fake_qemu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, modes: list[str], qmp: bool = True
) -> list[Path]:
    """``modes``: how guest-a (128 MiB) and guest-b (130 MiB) behave; they boot
    at once. With ``qmp`` each serves QMP on the socket it is given (whose
    paths are returned in the order asked for, which the threads decide), else none."""
    script = tmp_path / "qemu.py"
    script.write_text(FAKE_QEMU)
    by_memory = dict(zip((128, 130), modes, strict=True))
    sockets: list[Path] = []

    def argv(
        bzimage: Path,
        initrd: Path,
        disk: Path,
        memory_mib: int,
        drive: object = None,
        qmp_path: Path | None = None,
        *a: object,
    ) -> list[str]:
        if qmp_path is not None:
            sockets.append(qmp_path)
        served = str(qmp_path) if qmp and qmp_path is not None else "-"
        return [
            sys.executable, str(script), str(disk), str(memory_mib), by_memory[memory_mib], served
        ]  # fmt: skip

    monkeypatch.setattr(qemu_guest, "qemu_argv", argv)
    return sockets


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
    # finished workloads keep the agent's figures (QMP served, but not asked at the end)
    assert [(w.read_bytes_source, w.partial) for w in summary.workloads] == [("agent", False)] * 2
    assert all(w.read_bytes == DISK_PAGES * 4096 for w in summary.workloads)
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


def _run_hanging(
    image: guest_image.GuestImage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, qmp: bool
) -> tuple[list[WorkloadOutcome], list[Path]]:
    """Both guests' tar never sends DONE; the grace after the run is short."""
    sockets = _fake_qemu(monkeypatch, tmp_path, ["hang", "hang"], qmp=qmp)
    monkeypatch.setattr(qemu_runner, "WORKLOAD_GRACE_S", 0.5)
    (before, fds), threads = _baseline(), threading.active_count()
    out = tmp_path / "out"
    summary = qemu_runner.run_mode(
        _scenario(), runner.mode_config("ksm"), out, 4.0, 100, 20, image,
        disk_hashes(image.disk.path), 0,
    )  # fmt: skip
    assert children() == before
    assert open_fds() == fds
    assert threading.active_count() == threads
    assert len(sockets) == 2 and not sockets[0].parent.exists()  # the sockets' directory is gone
    again = read_summary(out / "summary.json")  # what the report reads back
    assert again is not None and again.workloads == summary.workloads
    return summary.workloads, sockets


def test_an_unfinished_workload_has_its_partial_throughput_from_qmp(
    image: guest_image.GuestImage,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workloads, _ = _run_hanging(image, monkeypatch, tmp_path, qmp=True)
    assert [w.name for w in workloads] == ["guest-a", "guest-b"]
    for w in workloads:
        assert not w.done and w.error and "no DONE" in w.error
        assert w.partial and w.read_bytes_source == "blockstats"
        # what QEMU read from the command to the run's end: not the boot's reads
        assert w.read_bytes == DISK_PAGES * 4096 // 2
        # from the command (guest-b 0.5 s late) to the run's end, 4 s after the start
        assert w.host_seconds is not None and 3.0 <= w.host_seconds <= 10.0
        assert w.read_mib_s == pytest.approx(w.read_bytes / 2**20 / w.host_seconds)
    all_guests, by_guest = metrics.guest_reads(workloads)
    assert all_guests is not None and by_guest is not None and None not in by_guest.values()
    shown = capsys.readouterr().out
    assert "guest-a: partial: 0.1 MiB in" in shown and "guest-b: partial:" in shown


def test_without_qmp_an_unfinished_workload_has_no_throughput(
    image: guest_image.GuestImage,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workloads, sockets = _run_hanging(image, monkeypatch, tmp_path, qmp=False)
    for w in workloads:
        assert not w.done and w.error and "no DONE" in w.error
        assert not w.partial and w.read_bytes_source is None
        assert (w.read_bytes, w.host_seconds, w.read_mib_s) == (None, None, None)
    assert metrics.guest_reads(workloads) == (None, {"guest-a": None, "guest-b": None})
    shown = capsys.readouterr().out
    # the guests boot at once: which asked for its socket first is not fixed
    (socket_a,) = [s for s in sockets if s.name == "guest-a.qmp"]
    assert f"guest-a: no read figure (QMP socket {socket_a}: " in shown

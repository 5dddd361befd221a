"""The real-QEMU scenarios' table and the runner's pure parts for them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment import qemu_runner, runner, scenarios
from pyksm.experiment.qemu_scenarios import (
    QEMU_SCENARIOS,
    QemuGuestSpec,
    QemuScenario,
    QemuSizes,
    sized,
)
from pyksm.lab import guest_image


def test_every_real_qemu_scenario_is_known_and_shaped() -> None:
    assert {"qemu-kernel-build", "qemu-apache", "qemu-mixed"} <= set(scenarios.names())
    assert set(scenarios.SCENARIOS) <= set(scenarios.names())
    for name, sc in QEMU_SCENARIOS.items():
        assert isinstance(scenarios.lookup(name), QemuScenario)
        assert len(sc.guests) >= 2 and sc.ballast_mib > 0
        assert all(128 <= g.memory_mib <= 512 for g in sc.guests)
        assert sc.drive.aio == "threads" and sc.drive.readonly
        assert sc.oracle == "snapshot"
        assert sc.to_dict()["name"] == name
    assert isinstance(scenarios.lookup("kernel-build"), scenarios.Scenario)
    with pytest.raises(PyksmError, match=r"unknown scenario 'nope'.*qemu-apache"):
        scenarios.lookup("nope")


def test_workloads_per_scenario() -> None:
    kb = QEMU_SCENARIOS["qemu-kernel-build"].guests
    assert [g.command(300).command() for g in kb] == ["tar .", "tar ."]
    assert kb[0].start_delay_s == 0 and kb[1].start_delay_s > 0
    ap = QEMU_SCENARIOS["qemu-apache"].guests
    assert {g.workload for g in ap} == {"random"} and ap[0].seed != ap[1].seed
    assert {g.path for g in ap} == {"kernel"} and all(g.files_per_s > 0 for g in ap)
    mixed = QEMU_SCENARIOS["qemu-mixed"].guests
    assert sorted(g.workload for g in mixed) == ["random", "tar"]


def test_a_paced_reader_is_asked_its_pace_times_its_time() -> None:
    g = QemuGuestSpec("g", "random", seed=3, files_per_s=25, start_delay_s=5.0)
    assert g.files_asked(105.0) == 2500
    assert g.command(105.0).command() == "random . 3 2500 25"
    assert QemuGuestSpec("t", "tar").files_asked(100.0) == 0
    assert QemuGuestSpec("u", "random").files_asked(100.0) == 0  # unpaced: all files


def test_bad_specs_are_one_line_errors() -> None:
    with pytest.raises(PyksmError, match="128 to 512 MiB"):
        QemuGuestSpec("g", "tar", memory_mib=64)
    with pytest.raises(PyksmError, match="workload 'dd'"):
        QemuGuestSpec("g", "dd")
    with pytest.raises(PyksmError, match="at least two guests"):
        QemuScenario("x", "", (QemuGuestSpec("g", "tar"),))


def test_sizes_replace_the_scenarios_own_and_say_so() -> None:
    kb = QEMU_SCENARIOS["qemu-kernel-build"]
    assert sized(kb, QemuSizes()) is kb and QemuSizes().args() == []
    sizes = QemuSizes(guest_memory_mib=512, ballast_mib=2048, disk_mib=400)
    big = sized(kb, sizes)
    assert [g.memory_mib for g in big.guests] == [512, 512]
    assert [g.start_delay_s for g in big.guests] == [g.start_delay_s for g in kb.guests]
    assert (big.ballast_mib, big.disk_mib, big.disk.size_mib) == (2048, 400, 400)
    assert big.description.startswith(kb.description)
    assert "guest RAM 512 MiB (not 192), ballast 2048 MiB (not 768), disk 400 MiB (not 96)" in (
        big.description
    )
    assert sizes.args() == [
        "--guest-memory", "512", "--ballast-mib", "2048", "--disk-mib", "400",
    ]  # fmt: skip
    only_disk = sized(kb, QemuSizes(disk_mib=200))
    assert only_disk.guests == kb.guests and only_disk.ballast_mib == kb.ballast_mib
    assert "disk 200 MiB (not 96)." in only_disk.description and "ballast" not in (
        only_disk.description.removeprefix(kb.description)
    )
    assert sized(kb, QemuSizes(ballast_mib=0)).ballast_mib == 0  # no ballast at all


def test_sizes_beyond_the_test_vm_are_one_line_errors() -> None:
    kb = QEMU_SCENARIOS["qemu-kernel-build"]
    for sizes, msg in (
        (QemuSizes(guest_memory_mib=100), "128 to 512 MiB"),
        (QemuSizes(ballast_mib=2049), "0 to 2048 MiB"),
        (QemuSizes(disk_mib=16), "32 to 1024 MiB"),
        (QemuSizes(disk_mib=1025), "32 to 1024 MiB"),
    ):
        with pytest.raises(PyksmError, match=msg):
            sized(kb, sizes)
    three = QemuScenario("x", "", tuple(QemuGuestSpec(f"g{i}", "tar", 512) for i in range(3)))
    with pytest.raises(PyksmError, match="take 3584 MiB: at most 3072"):
        sized(three, QemuSizes(ballast_mib=2048))
    with pytest.raises(PyksmError, match="for real-QEMU scenarios only, not apache"):
        runner.sized(scenarios.lookup("apache"), QemuSizes(disk_mib=100))
    assert runner.sized(scenarios.lookup("apache"), QemuSizes()) is scenarios.lookup("apache")


def test_io_achieved_of_real_guests() -> None:
    paced = QemuGuestSpec("g", "random", files_per_s=10)
    # 100 files in 10.5 s at a set 10 files/s
    done = qemu_runner.WorkloadOutcome("g", "random . 1 100 10", True, 0, 100, 1, 10.5)
    assert qemu_runner.io_achieved(paced, done) == pytest.approx(100 / 105)
    slow = qemu_runner.WorkloadOutcome("g", "random . 1 100 10", True, 0, 100, 1, 20.0)
    assert qemu_runner.io_achieved(paced, slow) == pytest.approx(0.5)
    cut = qemu_runner.WorkloadOutcome("g", "random . 1 100 10", False, error="no DONE")
    assert qemu_runner.io_achieved(paced, cut) == 0.0
    assert qemu_runner.io_achieved(QemuGuestSpec("t", "tar"), done) is None


def test_collector_and_ballast() -> None:
    assert qemu_runner.collector_args(False) == ["--qemu"]
    assert qemu_runner.collector_args(True) == ["--qemu", "--adaptive-interleave"]
    b = qemu_runner.ballast_spec(768)
    assert (b.ram_mib, b.io, b.cache_mib, b.heap_mib) == (768, "none", 0, 0)


def _args(**kw: object) -> argparse.Namespace:
    defaults = {"guest_image": None, "trace_hints": False, "visit_cost": False, "warm_up": 0}
    return argparse.Namespace(**{**defaults, **kw})


def test_the_runner_wants_the_saved_guest_image(tmp_path: Path) -> None:
    sc = QEMU_SCENARIOS["qemu-kernel-build"]
    with pytest.raises(PyksmError, match="needs --guest-image"):
        runner._step_runner(sc, _args(), 10, 100, 20)
    with pytest.raises(PyksmError, match="not a saved guest image"):
        (tmp_path / "g.json").write_text("{}")
        runner._step_runner(sc, _args(guest_image=tmp_path / "g.json"), 10, 100, 20)
    with pytest.raises(PyksmError, match="--trace-hints"):
        runner._step_runner(sc, _args(guest_image=tmp_path / "g.json", trace_hints=True), 1, 1, 1)


def test_guest_image_saves_and_loads(tmp_path: Path) -> None:
    files = [tmp_path / n for n in ("bzImage", "initrd", "disk.ext4")]
    for f in files:
        f.write_bytes(b"x")
    disk = guest_image.DiskImage(files[2], "k", 96, "linux-source-6.12", ["kernel"], 3, 100)
    image = guest_image.GuestImage(files[0], files[1], disk, "6.12.117-pyksm-guest")
    image.save(tmp_path / "image.json")
    assert guest_image.GuestImage.load(tmp_path / "image.json") == image
    files[2].unlink()
    with pytest.raises(PyksmError, match=r"disk\.ext4 is missing"):
        guest_image.GuestImage.load(tmp_path / "image.json")


def test_the_host_refuses_trace_hints_before_building_anything(tmp_path: Path) -> None:
    from rich.console import Console

    from pyksm.experiment import host

    with pytest.raises(PyksmError, match="--trace-hints: not for real-QEMU"):
        host.run("qemu-apache", ["ksm"], None, "100:20", tmp_path, Console(), trace_hints=True)
    assert not list(tmp_path.iterdir())


def test_the_host_refuses_an_icount_clock_for_real_qemu(tmp_path: Path) -> None:
    from rich.console import Console

    from pyksm.experiment import host

    with pytest.raises(PyksmError, match="--clock icount: not for real-QEMU"):
        host.run("qemu-apache", ["ksm"], None, "100:20", tmp_path, Console(), icount=True)
    assert not list(tmp_path.iterdir())


def test_visit_cost_is_refused_for_real_qemu_before_building_anything(tmp_path: Path) -> None:
    from rich.console import Console

    from pyksm.experiment import host

    with pytest.raises(PyksmError, match="--visit-cost: not for real-QEMU"):
        host.run("qemu-apache", ["ksm"], None, "100:20", tmp_path, Console(), visit_cost=True)
    assert not list(tmp_path.iterdir())
    sc = QEMU_SCENARIOS["qemu-kernel-build"]
    (tmp_path / "g.json").write_text("{}")
    with pytest.raises(PyksmError, match="--visit-cost"):
        runner._step_runner(sc, _args(guest_image=tmp_path / "g.json", visit_cost=True), 1, 1, 1)

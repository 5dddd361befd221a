"""--qmp never hangs: a silent socket is a clear error; a QMP server gives pid and RAM."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pyksm.collect import qmp
from pyksm.errors import PyksmError


def test_a_held_monitor_is_a_clear_error_not_a_hang(silent: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(PyksmError, match="another client") as e:
        qmp.query(str(silent), timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert e.value.hint and "-qmp" in e.value.hint


def test_a_missing_socket_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(PyksmError, match="No such file"):
        qmp.query(str(tmp_path / "none.qmp"), timeout=0.5)


def test_pid_and_ram_of_the_qemu_behind_the_socket(fake_qemu: Path) -> None:
    q = qmp.query(str(fake_qemu), timeout=5)
    assert q == qmp.QemuRam(os.getpid(), 512 << 20)


def test_collect_on_a_held_monitor_is_one_line(silent: Path, tmp_path: Path) -> None:
    from tests.unit.test_bad_input import run_case

    res = run_case(
        ["collect", "--qmp", str(silent), "--record", str(tmp_path / "t")], str(tmp_path)
    )
    assert res.code == 2, res.err
    assert len(res.err.splitlines()) == 1 and "another client" in res.err


def test_bytes_a_guest_read_from_its_disk(fake_qemu: Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    assert qmp.block_read_bytes(str(fake_qemu), timeout=5) == 7 << 20
    # the client closed its connection and event loop: the server saw it hang up
    end = time.monotonic() + 5
    while len(os.listdir("/proc/self/fd")) != fds and time.monotonic() < end:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_block_read_bytes_never_hangs_on_a_held_or_missing_monitor(
    silent: Path, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    with pytest.raises(PyksmError, match="another client"):
        qmp.block_read_bytes(str(silent), timeout=0.3)
    assert time.monotonic() - t0 < 5
    with pytest.raises(PyksmError, match="No such file"):
        qmp.block_read_bytes(str(tmp_path / "none.qmp"), timeout=0.3)


def test_rd_bytes_of_the_named_drive_or_the_only_one() -> None:
    def drive(name: str, rd: object) -> dict[str, object]:
        return {"device": name, "stats": {"rd_bytes": rd}}

    two = [drive("ide0-cd0", 1), drive("virtio0", 5)]
    assert qmp.rd_bytes(two, "virtio0", "s") == 5
    assert qmp.rd_bytes([drive("", 9)], "virtio0", "s") == 9  # -blockdev: no drive name
    with pytest.raises(PyksmError, match=r"no single drive 'virtio0' among \['a', 'b'\]"):
        qmp.rd_bytes([drive("a", 1), drive("b", 2)], "virtio0", "s")
    for bad in ([drive("virtio0", "5")], [drive("virtio0", True)], [{"device": "virtio0"}]):
        with pytest.raises(PyksmError, match="no rd_bytes"):
            qmp.rd_bytes(bad, "virtio0", "s")
    with pytest.raises(PyksmError, match="unexpected query-blockstats reply"):
        qmp.rd_bytes({"return": []}, "virtio0", "s")

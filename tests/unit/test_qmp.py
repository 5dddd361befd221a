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

"""`vm.run` leaves nothing behind when vng ends before its QEMU.

A killed vng leaves its QEMU running, orphaned, in vng's process group, and
holding vng's stdout/stderr pipes (seen: `pkill` of a vng left an experiment's
VM running and `pyksm experiment run` hung in a pipe close). The fake vng
here does that: it starts a long-lived child in its own process group and
exits at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pyksm.lab import accel, vm


def _fake_vng(tmp_path: Path) -> tuple[Path, Path]:
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "vng"
    script.write_text(
        "#!/bin/sh\n"
        f"sleep 300 & echo $! > {pidfile}\n"  # the "QEMU": same group, same pipes
        "echo booted; echo console >&2\n"
        "exit 3\n"
    )
    script.chmod(0o755)
    return script, pidfile


def test_run_kills_the_orphaned_qemu_and_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script, pidfile = _fake_vng(tmp_path)
    monkeypatch.setattr(vm, "vng_binary", lambda: str(script))
    monkeypatch.setattr(accel, "use_kvm", lambda _b: (False, "test"))
    bz = tmp_path / "bzImage"
    bz.write_bytes(b"")
    t0 = time.monotonic()
    res = vm.run(vm.VmRequest(bzimage=bz, command=["true"], outdir=tmp_path / "out", timeout=60))
    took = time.monotonic() - t0
    assert res.command_exit == 3 and not res.timed_out
    assert took < 30, f"vm.run took {took:.0f} s with an orphan holding its pipes"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a zombie of init's is gone for us: check its state
        stat = Path(f"/proc/{child}/stat")
        if stat.exists() and stat.read_text().split(") ")[1].startswith("Z"):
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("the orphaned child of vng was left running")
    assert "booted" in res.output_log.read_text()

"""The Vagrant lab end to end: box, ``vagrant up`` on the test kernel, ssh, run, destroy.

Slow (a systemd boot under TCG, 3-5 minutes) and needs root plus the packages of
``make vagrant-setup``, so it runs only with ``PYKSM_VAGRANT_TEST=1``:
``make vagrant-test`` (not part of ``make vm``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyksm.lab import build as kbuild
from pyksm.lab import patches
from pyksm.lab import vagrant as vg

from .conftest import summarize

REPO = Path(__file__).resolve().parents[2]
PYKSM = [str(REPO / ".venv" / "bin" / "pyksm")]

pytestmark = [
    pytest.mark.vagrant,
    pytest.mark.skipif(
        os.environ.get("PYKSM_VAGRANT_TEST") != "1",
        reason="Vagrant lab test: run with make vagrant-test (PYKSM_VAGRANT_TEST=1)",
    ),
]


def pyksm(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYKSM_VAGRANT_KERNEL"}
    return subprocess.run(
        [*PYKSM, *args], cwd=REPO, env=env, text=True, capture_output=True, timeout=timeout
    )


def qemu_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"guest={vg.DOMAIN}"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "qemu-system" in line]


@pytest.fixture(scope="module")
def lab() -> Iterator[kbuild.KernelBuild]:
    kernel = kbuild.build(kbuild.BuildRequest())
    t0 = time.monotonic()
    box = pyksm("vagrant", "box")
    assert box.returncode == 0, box.stdout[-2000:] + box.stderr[-2000:]
    t_box = time.monotonic() - t0
    t0 = time.monotonic()
    up = pyksm("vagrant", "up")
    t_up = time.monotonic() - t0
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        summarize(f"vagrant: box {t_box:.0f} s, up {t_up:.0f} s ({kernel.release})")
        yield kernel
    finally:
        pyksm("vagrant", "destroy")


def test_guest_runs_the_test_kernel(lab: kbuild.KernelBuild) -> None:
    proc = pyksm("vagrant", "ssh", "--", "uname -r; systemctl is-system-running || true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.split()
    assert lab.release in lines, proc.stdout
    assert any(state in lines for state in ("running", "degraded", "starting")), proc.stdout


def test_hint_capacity(lab: kbuild.KernelBuild) -> None:
    proc = pyksm("vagrant", "ssh", "--", "cat /sys/kernel/mm/ksm/hint_capacity")
    if proc.returncode != 0 and not patches.read_series(REPO / "kernel-patches").patches:
        pytest.skip("kernel-patches/series is still empty: no KSM++ hint buffer (hint_capacity)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert int(proc.stdout.split()[-1]) > 0


def test_run_brings_results_back(lab: kbuild.KernelBuild, tmp_path: Path) -> None:
    script = "python3 -c 'import bcc' && pyksm ksm show --json > $PYKSM_RESULTS/ksm.json"
    proc = pyksm("vagrant", "run", "--results", str(tmp_path), "--", "sh", "-c", script)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert '"pages_to_scan"' in (tmp_path / "ksm.json").read_text()


def test_destroy_leaves_nothing_running(lab: kbuild.KernelBuild) -> None:
    proc = pyksm("vagrant", "destroy")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not qemu_processes()
    assert not vg.libvirtd_state().running
    assert not Path(f"/run/netns/{vg.NETNS}").exists()

"""The lab's command line, end to end: build, boot, exit codes, failures shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pyksm.lab import build as kbuild
from tests.vm.conftest import SLOW

PYKSM = [sys.executable, "-m", "pyksm.cli"]


def pyksm(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYKSM, *args], capture_output=True, text=True, timeout=timeout)


def test_vm_run_prints_the_612_release(kernel: kbuild.KernelBuild, tmp_path: Path) -> None:
    r = pyksm(
        "vm", "run", "--kernel", str(kernel.bzimage), "-o", str(tmp_path), "--", "uname", "-r"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == kernel.release
    assert kernel.release.startswith("6.12.117")


def test_vm_run_false_exits_nonzero(kernel: kbuild.KernelBuild, tmp_path: Path) -> None:
    r = pyksm("vm", "run", "--kernel", str(kernel.bzimage), "-o", str(tmp_path), "--", "false")
    assert r.returncode == 1, r.stderr


def test_panic_at_boot_fails_within_timeout_and_is_shown(
    kernel: kbuild.KernelBuild, tmp_path: Path
) -> None:
    # A root filesystem type that cannot mount: the kernel panics before init.
    r = pyksm(
        "vm",
        "run",
        "--kernel",
        str(kernel.bzimage),
        "-o",
        str(tmp_path),
        "--timeout",
        str(int(120 * SLOW)),
        "--append",
        "rootfstype=ext4",
        "--",
        "true",
        timeout=300 * SLOW,
    )
    assert r.returncode != 0
    assert "Kernel panic - not syncing" in r.stderr
    assert "VFS: Unable to mount root fs" in (tmp_path / "console.log").read_text()


def test_crash_during_command_fails_even_if_command_succeeds(
    kernel: kbuild.KernelBuild, tmp_path: Path
) -> None:
    # sysrq-c crashes the kernel on purpose while the command itself "succeeds".
    r = pyksm(
        "vm",
        "run",
        "--kernel",
        str(kernel.bzimage),
        "-o",
        str(tmp_path),
        "--timeout",
        str(int(120 * SLOW)),
        "--",
        "sh",
        "-c",
        "echo c > /proc/sysrq-trigger; true",
        timeout=300 * SLOW,
    )
    assert r.returncode != 0
    assert "kernel panic report" in r.stderr or "kernel oops report" in r.stderr


def test_unsatisfiable_config_option_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.config"
    # NUMA_EMU (asked for by test.config) needs NUMA, which this fragment turns off.
    bad.write_text("# CONFIG_NUMA is not set\n")
    r = pyksm("kernel", "build", "--fragment", str(bad), timeout=600)
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pyksm: error:")]
    assert len(errors) == 1, r.stderr
    assert "CONFIG_NUMA_EMU=y" in errors[0] and "dropped" in errors[0]


def test_numpy_runs_on_array_tails_before_an_unmapped_page(
    kernel: kbuild.KernelBuild, tmp_path: Path
) -> None:
    """Under TCG the lab keeps numpy off the AVX2 masked loads QEMU 7.2 faults
    on (pyksm.lab.vm.TCG_NUMPY_ENV); without that, a float64 sum of 9 elements
    that end a mapping killed Python with SIGSEGV in this VM."""
    script = Path(__file__).parent / "guest" / "numpy_tails.py"
    r = pyksm(
        "vm", "run", "--kernel", str(kernel.bzimage), "-o", str(tmp_path), "--",
        sys.executable, str(script),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "OK"

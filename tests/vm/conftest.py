"""VM tests: boot the pyksm test kernel under virtme-ng and check it from inside.

``PYKSM_TEST_VARIANT=debug`` runs the same suite on the debug kernel (KASAN,
KFENCE, lockdep, DEBUG_VM). Every boot's console is scanned for kernel bug
reports; any report fails the test that booted it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from pyksm.lab import build as kbuild
from pyksm.lab import vm

REPO = Path(__file__).resolve().parents[2]
Boot = Callable[..., vm.VmResult]
# Lines for the end-of-run summary (selftest and KUnit counts, fuzz totals).
SUMMARY: list[str] = []
# The debug kernel (KASAN, KFENCE, lockdep) under TCG boots and runs user space
# several times slower (a bcc compile in it took more than 600 s): every VM
# test's timeouts, and its guest script's waits (PYKSM_TEST_SLOW), stretch by this.
SLOW = 4.0 if os.environ.get("PYKSM_TEST_VARIANT") == "debug" else 1.0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM ends a VM test run the way ^C does: the running VM is released
    # (pyksm.lab.vm.run kills its process group on the way out), not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)


def summarize(line: str) -> None:
    """Show ``line`` in the "pyksm VM summary" section at the end of the run."""
    SUMMARY.append(line)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("pyksm VM summary")
        for line in SUMMARY:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def variant() -> str:
    return os.environ.get("PYKSM_TEST_VARIANT", "test")


@pytest.fixture(scope="session")
def kernel(variant: str) -> kbuild.KernelBuild:
    return kbuild.build(kbuild.BuildRequest(variant=variant))


def _boot(
    kernel: kbuild.KernelBuild, outdir: Path, command: list[str], **kw: object
) -> vm.VmResult:
    kw["timeout"] = float(kw.get("timeout", 900.0)) * SLOW  # type: ignore[arg-type]
    kw["env"] = {"PYKSM_TEST_SLOW": str(SLOW), **kw.get("env", {})}  # type: ignore[dict-item]
    req = vm.VmRequest(bzimage=kernel.bzimage, command=command, outdir=outdir, **kw)  # type: ignore[arg-type]
    result = vm.run(req)
    if result.reports:
        text = "\n\n".join(r.text for r in result.reports)
        pytest.fail(f"kernel reports on the console ({result.console_log}):\n{text}")
    assert not result.timed_out, (
        f"VM timed out; console tail:\n{vm.console_tail(result.console_log)}"
    )
    return result


@pytest.fixture
def boot(kernel: kbuild.KernelBuild, tmp_path: Path) -> Boot:
    """boot(cmd, **VmRequest options) -> VmResult; fails on any kernel report."""

    def run(command: list[str], **kw: object) -> vm.VmResult:
        return _boot(kernel, tmp_path, command, **kw)

    return run


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable

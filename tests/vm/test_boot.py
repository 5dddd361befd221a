"""The test kernel boots, has KSM and kheaders, and bcc works inside it."""

from __future__ import annotations

import json
from pathlib import Path

from pyksm.lab import build as kbuild
from tests.vm.conftest import Boot

GUEST = Path(__file__).parent / "guest"


def test_kernel_has_ksm_kheaders_btf_and_numa(
    boot: Boot, python: str, tmp_path: Path, kernel: kbuild.KernelBuild
) -> None:
    out = tmp_path / "facts.json"
    result = boot([python, str(GUEST / "basics.py"), str(out)], numa=True)
    assert result.command_exit == 0
    facts = json.loads(out.read_text())
    assert facts["release"] == kernel.release
    assert facts["ksm_dir"]
    for name in (
        "run",
        "pages_to_scan",
        "sleep_millisecs",
        "full_scans",
        "pages_sharing",
        "smart_scan",
        "advisor_mode",
    ):
        assert name in facts["ksm_files"], name
    assert facts["kheaders"] > 1_000_000
    assert facts["btf"]
    assert facts["numa_nodes"] == ["node0", "node1"]


def test_bcc_tracepoint_sees_the_tests_syscalls(boot: Boot, python: str, tmp_path: Path) -> None:
    out = tmp_path / "bcc.json"
    result = boot([python, str(GUEST / "bcc_tracepoint.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    seen = json.loads(out.read_text())
    assert seen["seen"] == seen["expected"] == 17


def test_failing_command_exit_code_is_passed_through(boot: Boot) -> None:
    result = boot(["sh", "-c", "exit 7"])
    assert result.command_exit == 7
    assert result.exit_code == 7

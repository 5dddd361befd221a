"""Upstream KSM selftests pass on the test kernel (one boot, results per case).

``KSM_HINTS_STRESS_S=600`` (in the environment of pytest) makes the stress
case of ksm_hints_tests run ten minutes; the VM's timeout grows with it.
"""

from __future__ import annotations

import os

import pytest

from pyksm.lab import build as kbuild
from pyksm.lab import selftests, vm
from tests.vm.conftest import _boot, summarize

CASE_NAMES = [c[0] for c in selftests.CASES]


@pytest.fixture(scope="module")
def results(
    kernel: kbuild.KernelBuild, python: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, selftests.CaseResult]:
    out = tmp_path_factory.mktemp("selftests")
    env = {k: v for k, v in os.environ.items() if k == "KSM_HINTS_STRESS_S"}
    stress = selftests.stress_seconds()
    res: vm.VmResult = _boot(
        kernel,
        out,
        [
            python,
            "-m",
            "pyksm.lab.selftests",
            str(kernel.path / "selftests"),
            str(out / "selftests.json"),
        ],
        numa=True,
        memory="2G",
        env=env,
        timeout=900.0 + 2 * stress,
    )
    assert (out / "selftests.json").exists(), res.output_log.read_text()[-3000:]
    loaded = selftests.load(out / "selftests.json")
    for r in loaded:
        summarize(
            f"{r.status:4} {r.name:18} {r.seconds:6.1f} s  tap pass={r.tap_pass} "
            f"fail={r.tap_fail} skip={r.tap_skip}"
            + (" (its first run failed: upstream race, run again)" if r.first_failure else "")
        )
    return {r.name: r for r in loaded}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_upstream_ksm_selftest_passes(results: dict[str, selftests.CaseResult], name: str) -> None:
    assert name in results, f"{name}: its binary was not built (is the KSM++ series applied?)"
    r = results[name]
    assert r.status == "pass", f"{r.argv} exit {r.exit_code}:\n{r.output[-4000:]}"
    if name == "functional":
        assert r.tap_pass >= 5 and r.tap_fail == 0

"""pyksm.experiment.hostinfo: the machine an experiment ran on, in host.json
and in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment import hostinfo
from pyksm.report import aggregate, dataset, render
from tests.unit.test_report_reps import write_config, write_rep

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC   7B13 64-Core Processor
flags\t\t: fpu vme

processor\t: 1
model name\t: AMD EPYC 7B13 64-Core Processor
"""


def test_probe_reads_the_first_model_name(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    info = hostinfo.probe("tcg", 0.4567, cpuinfo)
    assert info.cpu_model == "AMD EPYC 7B13 64-Core Processor"
    assert info.accel == "tcg" and info.loadavg_1m_before == 0.46 and info.cpus >= 1
    cpuinfo.write_text("processor\t: 0\n")
    assert hostinfo.cpu_model(cpuinfo) == "unknown"
    assert hostinfo.cpu_model(tmp_path / "missing") == "unknown"


def test_round_trip_and_old_results_without_it(tmp_path: Path) -> None:
    info = hostinfo.HostInfo("cpu", 2, "6.1.0", "kvm", 0.1)
    hostinfo.save(tmp_path, info)
    assert hostinfo.load(tmp_path) == info
    assert hostinfo.load(tmp_path / "elsewhere") is None
    assert "KVM" in hostinfo.describe(info)
    assert "QEMU TCG" in hostinfo.describe(hostinfo.HostInfo("cpu", 2, "6.1.0", "tcg", 0.1))
    icount = hostinfo.describe(hostinfo.HostInfo("cpu", 2, "6.1.0", "tcg+icount", 0.1))
    assert "instruction-counted" in icount and "one vCPU" in icount


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "[]",
        '{"cpu_model": "x"}',
        '{"cpu_model": "x", "cpus": "2", "kernel": "k", "accel": "tcg", "loadavg_1m_before": 0}',
        '{"cpu_model": "x", "cpus": true, "kernel": "k", "accel": "tcg", "loadavg_1m_before": 0}',
        '{"cpu_model": "x", "cpus": 2, "kernel": "k", "accel": "tcg", "loadavg_1m_before": 0, '
        '"extra": 1}',
    ],
)
def test_a_bad_host_record_is_named(tmp_path: Path, text: str) -> None:
    (tmp_path / "host.json").write_text(text)
    with pytest.raises(PyksmError, match=r"host\.json: "):
        hostinfo.load(tmp_path)


def test_the_report_names_the_host(tmp_path: Path) -> None:
    base = tmp_path / "out" / "kernel-build"
    write_config(base, ["ksm"], 1)
    write_rep(base, "ksm", 1, 0)
    hostinfo.save(base, hostinfo.HostInfo("Some CPU 9000", 2, "6.1.0-42", "tcg", 0.25))
    exp = dataset.load(base)
    page = render.write([exp], tmp_path / "report").read_text()
    assert "Some CPU 9000, 2 CPUs, Linux 6.1.0-42" in page
    doc = aggregate.metrics_json([aggregate.summarize(exp)])
    assert doc["experiments"][0]["host"]["cpu_model"] == "Some CPU 9000"
    json.dumps(doc)  # numbers and strings only


def _fake_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """kernel build and VM of ``host.run`` faked; the "runner" makes its scenario dir."""
    from types import SimpleNamespace

    from pyksm.lab import build as kbuild
    from pyksm.lab import vm

    monkeypatch.setattr(
        kbuild,
        "build",
        lambda *a: SimpleNamespace(bzimage=tmp_path / "bzImage", release="6.12-test"),
    )

    def run(req: object) -> object:
        (tmp_path / "out" / "kernel-build").mkdir(parents=True)
        return SimpleNamespace(ok=True, exit_code=0, accel="tcg")

    monkeypatch.setattr(vm, "run", run)


def test_an_experiment_writes_its_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from pyksm.experiment import host

    _fake_run(monkeypatch, tmp_path)
    host.run("kernel-build", ["ksm"], 10, "100:20", tmp_path / "out", Console())
    info = hostinfo.load(tmp_path / "out" / "kernel-build")
    assert info is not None and info.accel == "tcg" and info.cpus >= 1


def test_a_host_record_that_cannot_be_written_costs_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from pyksm.experiment import host

    _fake_run(monkeypatch, tmp_path)

    def full(*a: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hostinfo, "save", full)
    console = Console(record=True, width=200)
    path = host.run("kernel-build", ["ksm"], 10, "100:20", tmp_path / "out", console)
    assert path == tmp_path / "out" / "kernel-build"
    assert "could not write host.json" in console.export_text()

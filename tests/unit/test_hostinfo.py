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

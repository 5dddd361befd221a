"""The steady scenario and what the runner keeps for long runs: its wiring from
the command line to the VM, the duration bounds, the VM timeout, the progress
lines, /proc/vmstat's cow_ksm and the diagnosis counters in summary.json."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from pyksm.errors import PyksmError
from pyksm.experiment import guest, host, runner, scenarios
from pyksm.experiment.results import Diagnosis, Summary, read_summary
from pyksm.procfs import parse_vmstat


def test_steady_is_apache_for_twenty_minutes_with_a_ten_minute_window() -> None:
    sc = scenarios.get("steady")
    apache = scenarios.get("apache")
    assert sc.duration_s >= 1200 and sc.steady_window_s == 600
    assert sc.guests == apache.guests and sc.image_mib == apache.image_mib
    assert apache.steady_window_s is None
    # the file set is larger than every guest's page cache: frames are reused
    blocks = sc.image_mib * (1 << 20) // guest.PAGE
    for spec in sc.guests:
        assert spec.io == "random"
        files = guest.file_table(blocks, spec.files, sc.seed)
        assert sum(n for _, n in files) > spec.cache_mib * 256
    assert sc.to_dict()["steady_window_s"] == 600


@pytest.mark.parametrize(
    ("text", "ok"),
    [("1200", 1200.0), ("0.5", 0.5), ("86400", 86400.0)]
    + [(t, None) for t in ("0", "-1", "86400.5", "1e9", "nan", "inf", "-inf", "", "20m")],
)
def test_durations(text: str, ok: float | None) -> None:
    if ok is None:
        with pytest.raises(PyksmError, match=r"duration|seconds"):
            scenarios.parse_duration(text)
    else:
        assert scenarios.parse_duration(text) == ok


@pytest.mark.parametrize(
    ("duration", "every"), [(1, 10), (180, 10), (600, 10), (1200, 20), (3600, 60)]
)
def test_progress_lines_thin_out_for_long_runs(duration: float, every: int) -> None:
    assert runner.progress_every(duration) == every


@pytest.mark.parametrize(("runs", "duration"), [(1, 180), (2, 1200), (6, 1200), (10, 86400)])
def test_the_vm_timeout_covers_every_run(runs: int, duration: float) -> None:
    t = host.vm_timeout(runs, duration)
    assert t >= runs * (duration + host.PER_RUN_S) + host.BOOT_S
    assert host.vm_timeout(runs + 1, duration) - t >= duration + host.PER_RUN_S
    assert host.vm_timeout(runs, 2 * duration) - t >= runs * duration


def _fake_vm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    from pyksm.lab import build as kbuild
    from pyksm.lab import vm

    requests: list[object] = []
    monkeypatch.setattr(
        kbuild,
        "build",
        lambda *a: SimpleNamespace(bzimage=tmp_path / "bzImage", release="6.12-test"),
    )

    def run(req: object) -> object:
        requests.append(req)
        return SimpleNamespace(ok=True, exit_code=0)

    monkeypatch.setattr(vm, "run", run)
    return requests


def test_experiment_run_steady_boots_one_vm_for_the_whole_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from pyksm import cli
    from pyksm.report import cli as report_cli

    requests = _fake_vm(monkeypatch, tmp_path)
    shown: list[Path] = []
    monkeypatch.setattr(report_cli, "show_summary", shown.append)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # main's SIGTERM handler
    argv = ["experiment", "run", "steady", "--modes", "ksm,ksm++", "--repeat", "3"]
    assert cli.main([*argv, "-o", str(tmp_path / "out")]) == 0
    (req,) = requests
    cmd = req.command  # type: ignore[attr-defined]
    assert cmd[cmd.index("pyksm.experiment.runner") + 1] == "steady"
    assert float(cmd[cmd.index("--duration") + 1]) == 1200
    # 2 modes x 3 repetitions of 20 minutes
    assert req.timeout == host.vm_timeout(6, 1200) > 6 * 1200  # type: ignore[attr-defined]
    assert shown == [(tmp_path / "out" / "steady").resolve()]


def test_a_bad_duration_through_the_api_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = _fake_vm(monkeypatch, tmp_path)
    console = Console(file=io.StringIO())
    for bad in (0.0, -1.0, 1e9, float("nan")):
        with pytest.raises(PyksmError, match="duration"):
            host.run("steady", ["ksm"], bad, "100:20", tmp_path, console)
        with pytest.raises(PyksmError, match="duration"):
            host.run_matrix(["steady"], ["ksm"], bad, "100:20", tmp_path, console)
    assert requests == []


@pytest.mark.usefixtures("runner_on_fake_ksm")
def test_the_runner_gives_steady_its_twenty_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    durations: list[float] = []

    def run_mode(
        sc: object, cfg: object, out: Path, duration: float, *a: object, **kw: object
    ) -> None:
        durations.append(duration)

    monkeypatch.setattr(runner, "run_mode", run_mode)
    monkeypatch.setattr(sys, "argv", ["runner", "steady", str(tmp_path / "o")])
    assert runner.main() == 0
    assert durations == [1200.0, 1200.0]
    cfg = json.loads((tmp_path / "o" / "steady" / "config.json").read_text())
    assert cfg["duration_s"] == 1200 and cfg["scenario"]["steady_window_s"] == 600


VMSTAT = "nr_free_pages 1000\nksm_swpin_copy 0\ncow_ksm 42\npgfault 7\n"


@pytest.mark.parametrize(
    ("text", "names", "want"),
    [
        (VMSTAT, ("cow_ksm",), {"cow_ksm": 42}),
        (VMSTAT, ("cow_ksm", "pgfault"), {"cow_ksm": 42, "pgfault": 7}),
        # CONFIG_VM_EVENT_COUNTERS off: no event lines, the counter is absent, not 0
        ("nr_free_pages 1000\n", ("cow_ksm",), {}),
        ("", ("cow_ksm",), {}),
    ],
)
def test_vmstat_counters(text: str, names: tuple[str, ...], want: dict[str, int]) -> None:
    assert parse_vmstat(text, names) == want


def test_a_garbled_vmstat_line_is_one_error() -> None:
    with pytest.raises(PyksmError, match="cow_ksm is not a number"):
        parse_vmstat("cow_ksm lots\n", ("cow_ksm",))


def test_diagnosis_is_the_growth_over_the_run() -> None:
    first = {"cow_ksm": 10, "hints_dropped_age": 4, "hints_dropped_overflow": 0}
    last = {"cow_ksm": 250, "hints_dropped_age": 9, "hints_dropped_flush": 3}
    d = Diagnosis.between(first, last)
    # a counter missing at either end is unknown (None), not 0
    assert d == Diagnosis(cow_ksm=240, hints_dropped_age=5)


def test_summary_keeps_the_diagnosis_and_reads_old_ones(tmp_path: Path) -> None:
    d = Diagnosis(cow_ksm=240, hints_dropped_overflow=0, hints_dropped_age=5)
    s = Summary(mode="ksm++", clk_tck=100, lifetimes={}, diagnosis=d)
    path = tmp_path / "summary.json"
    path.write_text(s.to_json())
    got = read_summary(path)
    assert got is not None and got.diagnosis == d
    path.write_text(json.dumps({"mode": "ksm", "clk_tck": 100, "lifetimes": {}}))
    old = read_summary(path)
    assert old is not None and old.diagnosis is None
    path.write_text(
        json.dumps({"mode": "ksm", "clk_tck": 100, "lifetimes": {}, "diagnosis": {"cow_ksm": "x"}})
    )
    with pytest.raises(PyksmError, match="diagnosis: field 'cow_ksm' is str"):
        read_summary(path)

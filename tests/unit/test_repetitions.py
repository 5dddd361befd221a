"""Repetitions: the interleaved plan, the results layout, the load each run saw."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from pyksm.errors import PyksmError
from pyksm.experiment import cli as experiment_cli
from pyksm.experiment.results import Load, Summary, mode_reps, read_summary, rep_dir
from pyksm.experiment.runner import Step, schedule
from pyksm.procfs import CpuTimes, parse_cpu_times


def test_two_modes_alternate_which_runs_first() -> None:
    plan = schedule(["ksm", "ksm++"], 3)
    assert [(s.rep, s.mode) for s in plan] == [
        (1, "ksm"), (1, "ksm++"),
        (2, "ksm++"), (2, "ksm"),
        (3, "ksm"), (3, "ksm++"),
    ]  # fmt: skip


def test_every_mode_takes_every_place_once_per_cycle() -> None:
    modes = ["a", "b", "c"]
    plan = schedule(modes, 6)
    assert len(plan) == 18
    for rep in range(1, 7):
        assert sorted(s.mode for s in plan if s.rep == rep) == modes
    for place in range(3):
        firsts = [plan[3 * r + place].mode for r in range(6)]
        assert sorted(firsts) == ["a", "a", "b", "b", "c", "c"]
    assert schedule(["ksm"], 2) == [Step(1, "ksm"), Step(2, "ksm")]


@pytest.mark.parametrize(
    ("modes", "repeat", "message"),
    [(["ksm"], 0, "at least 1"), ([], 1, "no modes"), (["ksm", "ksm"], 1, "ksm is given twice")],
)
def test_bad_plans_are_refused(modes: list[str], repeat: int, message: str) -> None:
    with pytest.raises(PyksmError, match=message):
        schedule(modes, repeat)


def test_scenario_and_mode_lists() -> None:
    assert experiment_cli.scenario_names("apache, kernel-build") == ["apache", "kernel-build"]
    assert experiment_cli.scenario_names("all") == [
        "apache",
        "kernel-build",
        "mixed",
        "no-io",
        "steady",
        "unique-io",
    ]
    with pytest.raises(PyksmError, match="unknown scenario 'x'"):
        experiment_cli.scenario_names("apache,x")
    with pytest.raises(PyksmError, match="ksm\\+\\+ is given twice"):
        experiment_cli.modes("ksm++,ksm,ksm++")


def test_proc_stat_cpu_line() -> None:
    t = parse_cpu_times("cpu  100 5 50 800 20 3 2 7 40 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    # guest (40) is already in user time: not added again
    assert t == CpuTimes(total=100 + 5 + 50 + 800 + 20 + 3 + 2 + 7, idle=820, steal=7)
    assert parse_cpu_times("cpu 1 2 3 4 5\n") == CpuTimes(15, 9, 0)  # old kernels: no steal
    assert t - CpuTimes(10, 5, 1) == CpuTimes(977, 815, 6)
    with pytest.raises(PyksmError, match="/proc/stat"):
        parse_cpu_times("intr 1 2 3")


def test_summary_keeps_rep_and_load_and_reads_old_ones(tmp_path: Path) -> None:
    s = Summary(
        mode="ksm",
        clk_tck=100,
        lifetimes={},
        io_achieved=[0.97, None, 0.9],
        rep=2,
        load=Load(seconds=60.0, cpu_ticks=12000, idle_ticks=3000, steal_ticks=600),
    )
    (tmp_path / "summary.json").write_text(s.to_json())
    back = read_summary(tmp_path / "summary.json")
    assert back == s
    assert back is not None and back.load is not None
    assert (back.load.idle_fraction, back.load.steal_fraction) == (0.25, 0.05)
    assert back.io_pace == 0.9 and back.paced is False
    old = {"mode": "ksm", "clk_tck": 100, "lifetimes": {}, "io_achieved": [None]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    back = read_summary(tmp_path / "old.json")
    assert back is not None and (back.rep, back.load, back.io_pace, back.paced) == (
        None, None, None, None,
    )  # fmt: skip
    bad = {**old, "load": {"seconds": 1.0, "cpu_ticks": "1", "idle_ticks": 0, "steal_ticks": 0}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PyksmError, match=r"bad\.json load: field 'cpu_ticks' is str"):
        read_summary(tmp_path / "bad.json")


def test_repetition_directories_and_the_single_run_layout(tmp_path: Path) -> None:
    for rep in (2, 1, 10):
        d = rep_dir(tmp_path, "ksm++", rep)
        d.mkdir(parents=True)
        (d / "samples.jsonl").write_text("{}\n")
    (tmp_path / "ksm++" / "rep-03").mkdir()  # a run that never sampled
    (tmp_path / "ksm++" / "notes").mkdir()
    assert rep_dir(tmp_path, "ksm++", 2).name == "rep-02"
    assert [r for r, _ in mode_reps(tmp_path / "ksm++")] == [1, 2, 10]
    old = tmp_path / "ksm"
    old.mkdir()
    (old / "samples.jsonl").write_text("{}\n")
    assert mode_reps(old) == [(1, old)]
    assert mode_reps(tmp_path / "missing") == []


@pytest.mark.usefixtures("runner_on_fake_ksm")
def test_the_runner_runs_the_plan_in_one_process_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyksm.experiment import runner

    calls: list[tuple[int | None, str, Path]] = []

    def run_mode(sc: object, cfg: runner.ModeConfig, out: Path, *a: object, **kw: object) -> None:
        assert kw == {"visit_cost": False}
        calls.append((a[-1], cfg.name, out))  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "run_mode", run_mode)
    outdir = tmp_path / "out"
    argv = ["runner", "no-io", str(outdir), "--modes", "ksm,ksm++", "--repeat", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    assert runner.main() == 0
    base = outdir / "no-io"
    assert calls == [
        (1, "ksm", base / "ksm" / "rep-01"),
        (1, "ksm++", base / "ksm++" / "rep-01"),
        (2, "ksm++", base / "ksm++" / "rep-02"),
        (2, "ksm", base / "ksm" / "rep-02"),
    ]
    cfg = json.loads((base / "config.json").read_text())
    assert cfg["repeat"] == 2 and cfg["modes"] == ["ksm", "ksm++"]
    assert cfg["order"] == [[1, "ksm"], [1, "ksm++"], [2, "ksm++"], [2, "ksm"]]
    assert (base / "complete").exists()


def test_host_boots_one_vm_per_scenario_and_goes_on_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyksm.experiment import host
    from pyksm.lab import build as kbuild
    from pyksm.lab import cli as lab_cli
    from pyksm.lab import vm

    builds: list[object] = []

    def build(*a: object) -> object:
        builds.append(a)
        return SimpleNamespace(bzimage=tmp_path / "bzImage", release="6.12-test")

    requests: list[vm.VmRequest] = []

    def run(req: vm.VmRequest) -> object:
        requests.append(req)
        ok = "apache" not in req.command
        return SimpleNamespace(ok=ok, exit_code=0 if ok else 1, console_log="c", output_log="o")

    monkeypatch.setattr(kbuild, "build", build)
    monkeypatch.setattr(vm, "run", run)
    monkeypatch.setattr(lab_cli, "report_vm_result", lambda res: None)
    console = Console(file=io.StringIO())
    with pytest.raises(PyksmError, match=r"1 of 2 scenarios failed \(apache\)"):
        host.run_matrix(
            ["apache", "kernel-build"], ["ksm", "ksm++"], 10, "100:20", tmp_path, console,
            repeat=3,
        )  # fmt: skip
    assert len(builds) == 1 and len(requests) == 2
    cmd = requests[1].command
    assert cmd[cmd.index("--repeat") + 1] == "3" and "kernel-build" in cmd
    assert requests[1].timeout == pytest.approx(6 * (10 * 1.05 + 600) + 300)
    with pytest.raises(PyksmError, match="given twice"):
        host.run_matrix(["apache"], ["ksm", "ksm"], 10, "100:20", tmp_path, console)
    assert len(builds) == 1  # refused before building

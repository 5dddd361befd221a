"""The runner's results as the report reads them, and nothing left behind when a mode fails."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pyksm.errors import PyksmError
from pyksm.experiment import guest, hintpairs, runner, scenarios
from pyksm.experiment.oracle_ledger import LedgerOracle
from pyksm.kernel import ksm
from pyksm.report import dataset, metrics


def fake_sysfs(root: Path) -> ksm.Ksm:
    root.mkdir()
    for name in ("run", "pages_shared", "pages_sharing", "full_scans", "pages_scanned"):
        (root / name).write_text("0\n")
    for name, value in (("pages_to_scan", 100), ("sleep_millisecs", 20)):
        (root / name).write_text(f"{value}\n")
    return ksm.Ksm(root)


def children() -> set[int]:
    """This process's live children (every thread's), zombies excluded."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    live = set()
    for pid in found:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            live.add(pid)
    return live


def open_fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")}  # fmt: skip


def test_the_runners_samples_and_summary_load_in_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = fake_sysfs(tmp_path / "ksm")
    (k.root / "pages_sharing").write_text("7\n")
    (k.root / "hints_dropped_age").write_text("3\n")
    # /proc/vmstat's cow_ksm grows by 5 per sample; the kernel has no other
    cow = iter(range(100, 1000, 5))
    monkeypatch.setattr(runner, "vmstat", lambda names: {"cow_ksm": next(cow)})
    ledger = tmp_path / "ledger.bin"
    np.array([5, 5, 9, 0], dtype=np.int64).tofile(ledger)
    oracle = LedgerOracle([ledger])
    base = tmp_path / "out" / "kernel-build"
    (base / "ksm").mkdir(parents=True)
    (base / "config.json").write_text(
        json.dumps({"scenario": {"name": "kernel-build"}, "modes": ["ksm"]})
    )
    cfg = runner.mode_config("ksm")
    counters = runner.RunCounters(k, cfg.name)
    measured = runner._measure(
        counters,
        cfg,
        1.2,
        oracle,
        [],
        {"ksmd": os.getpid()},
        base / "ksm" / "samples.jsonl",
        None,
        hintpairs.LedgerHistory(),
    )
    load = measured.load
    diagnosis, failures = counters.finish()
    # the machine's load over the run, from /proc/stat
    assert load.seconds >= 1.2 and load.cpu_ticks > 0
    assert 0 <= load.idle_ticks <= load.cpu_ticks and 0 <= load.steal_ticks <= load.cpu_ticks
    summary = runner.Summary(
        mode="ksm",
        clk_tck=os.sysconf("SC_CLK_TCK"),
        lifetimes=oracle.histogram(2.0),
        rep=1,
        load=load,
        diagnosis=diagnosis,
    )
    # two samples: cow_ksm grew by 5; a counter that did not grow is 0, one
    # the kernel lacks is None
    assert diagnosis == runner.Diagnosis(cow_ksm=5, hints_dropped_age=0)
    assert failures is None  # no hint_pages_failed_* in this kernel
    (base / "ksm" / "summary.json").write_text(summary.to_json())
    exp = dataset.load(base)
    run = exp.reps["ksm"][0]
    assert run.complete and run.summary == summary
    assert list(run.pages_sharing) == [7.0, 7.0] and list(run.oracle) == [1.0, 1.0]
    assert run.last("pages_to_scan") == 100
    assert [r.get("cow_ksm") for r in run.rows] == [100, 105]
    m = metrics.compute(run)
    assert m.mode == "ksm"


@pytest.mark.usefixtures("runner_on_fake_ksm")
def test_run_counters_diagnose_a_run_from_its_first_and_last_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The counters both runners (ledger and real QEMU guests) diagnose a run by."""
    k = runner.ksm.Ksm()
    for name in ("pages_sharing", "hints_dropped_stale", *ksm.MergeFailures.counter_names()):
        (k.root / name).write_text("2\n")
    monkeypatch.setattr(runner, "vmstat", lambda names: {})  # no CONFIG_VM_EVENT_COUNTERS
    counters = runner.RunCounters(k, "ksm++")  # the failed merges at the start: 2 each
    first = counters.read()
    assert first["hints_dropped_stale"] == 2 and "cow_ksm" not in first
    assert "no cow_ksm in /proc/vmstat" in capsys.readouterr().out
    (k.root / "hints_dropped_stale").write_text("9\n")
    (k.root / "hint_pages_failed_refs").write_text("7\n")
    counters.read()
    assert counters.grown("hints_dropped_stale") == 7 and counters.grown("cow_ksm") == 0
    diagnosis, failures = counters.finish()
    assert diagnosis == runner.Diagnosis(hints_dropped_stale=7)  # cow_ksm: None, not 0
    assert failures == ksm.MergeFailures(refs=5).as_dict()
    assert "failed hinted merges: {" in capsys.readouterr().out
    # an unpatched kernel: no failed merges recorded, not zeros
    (k.root / "hint_pages_failed_refs").unlink()
    assert runner.RunCounters(k, "ksm").finish()[1] is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda row: row.pop("oracle"), "'oracle' is missing"),
        (lambda row: row.update(pages_sharing="7"), "'pages_sharing' is str"),
        (lambda row: row.update(t=None), "'t' is NoneType"),
    ],
)
def test_missing_or_ill_typed_sample_fields_name_file_and_field(
    tmp_path: Path, mutate: Any, field: str
) -> None:
    base = tmp_path / "s"
    (base / "ksm").mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"modes": ["ksm"]}))
    row = {"t": 0.0, "pages_sharing": 1, "ksmd_ticks": 0, "oracle": 2, "oracle_file": 0}
    mutate(row)
    (base / "ksm" / "samples.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(PyksmError, match=field) as e:
        dataset.load(base)
    assert "samples.jsonl:1" in str(e.value)


def test_an_ill_typed_summary_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "s"
    (base / "ksm").mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"modes": ["ksm"]}))
    row = {"t": 0.0, "pages_sharing": 1, "ksmd_ticks": 0, "oracle": 2, "oracle_file": 0}
    (base / "ksm" / "samples.jsonl").write_text(json.dumps(row) + "\n")
    (base / "ksm" / "summary.json").write_text(json.dumps({"mode": "ksm", "clk_tck": "100"}))
    with pytest.raises(PyksmError, match=r"summary.json: field 'clk_tck' is str"):
        dataset.load(base)


FAKE_GUEST = """
import json, sys
if sys.argv[1] == "die":
    sys.exit(3)
print(json.dumps({"pid": 0, "ram": [0, 0]}), flush=True)
for line in sys.stdin:
    if not line.strip():
        break
print(json.dumps({"read_bytes": 0}), flush=True)
"""


def _scenario(n: int) -> scenarios.Scenario:
    return scenarios.Scenario(
        "t", "test", tuple(scenarios.GuestSpec(f"g{i}", io="none") for i in range(n))
    )


@pytest.fixture
def fake_guests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    script = tmp_path / "guest.py"
    script.write_text(FAKE_GUEST)
    k = fake_sysfs(tmp_path / "ksm")
    monkeypatch.setattr(runner.ksm, "Ksm", lambda: k)
    return script


def _run_mode(tmp_path: Path, n: int = 2) -> None:
    runner.run_mode(_scenario(n), runner.mode_config("ksm"), tmp_path / "m", 1.0, 100, 20,
                    tmp_path / "image")  # fmt: skip


def test_a_guest_dying_at_boot_leaves_nothing(
    fake_guests: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    argv = {0: "ok", 1: "die"}
    monkeypatch.setattr(
        guest, "argv", lambda spec, i, *a: [sys.executable, str(fake_guests), argv[i]]
    )
    before, fds = children(), open_fds()
    with pytest.raises(PyksmError, match="died while booting"):
        _run_mode(tmp_path)
    assert children() == before
    assert open_fds() == fds


def test_an_exception_in_the_warm_up_leaves_nothing(
    fake_guests: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(guest, "argv", lambda *a: [sys.executable, str(fake_guests), "ok"])

    def boom(*a: object) -> float:
        raise PyksmError("ksmd did not finish 2 warm-up rounds in 600 s")

    monkeypatch.setattr(runner, "_warm_up", boom)
    before, fds = children(), open_fds()
    with pytest.raises(PyksmError, match="warm-up"):
        _run_mode(tmp_path)
    assert children() == before
    assert open_fds() == fds
    assert not list(Path("/dev/shm").glob("pyksm-ledger-ksm-*"))


def test_a_collector_that_never_gets_ready_is_killed(tmp_path: Path) -> None:
    from pyksm.collect.process import CollectorProcess

    before, fds = children(), open_fds()
    # A target that does not exist: the collector exits before it is ready.
    with pytest.raises(PyksmError, match="exited at start"):
        CollectorProcess(["-p", "999999999", "--record", str(tmp_path / "t")], tmp_path / "log")
    assert children() == before
    assert open_fds() == fds


def test_a_collector_that_never_attaches_is_killed_at_the_deadline(tmp_path: Path) -> None:
    from pyksm.collect.process import CollectorProcess

    stuck = tmp_path / "stuck-python"
    stuck.write_text("#!/bin/sh\nexec sleep 60\n")
    stuck.chmod(0o755)
    before, fds = children(), open_fds()
    with pytest.raises(PyksmError, match="not ready within 1 s"):
        CollectorProcess([], tmp_path / "log", timeout=1, python=str(stuck))
    assert children() == before
    assert open_fds() == fds


@pytest.mark.parametrize(
    ("script", "timeout", "error"),
    [
        ("#!/bin/sh\nexit 1\n", 30.0, "exited before READY"),
        ("#!/bin/sh\nexec sleep 60\n", 1.0, "no b'READY' within 1 s"),
    ],
    ids=["dies at boot", "hangs at boot"],
)
def test_a_qemu_guest_that_does_not_boot_leaves_nothing(
    tmp_path: Path, script: str, timeout: float, error: str
) -> None:
    from pyksm.experiment.qemu_guest import Guest

    qemu = tmp_path / "qemu"
    qemu.write_text(script)
    qemu.chmod(0o755)
    before, fds = children(), open_fds()
    with pytest.raises(PyksmError, match=re.escape(error)):
        Guest(tmp_path / "bzImage", tmp_path / "disk", boot_timeout=timeout, qemu=str(qemu),
              initrd=tmp_path / "initrd")  # fmt: skip
    assert children() == before
    assert open_fds() == fds

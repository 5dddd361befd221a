"""The report of real-QEMU scenarios: the diagnosis and failed merges that
qemu_runner records, and the guests' read throughput per mode with its ratio
to ksm per repetition pair (constructed results, no guests)."""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from rich.console import Console

from pyksm.errors import PyksmError
from pyksm.experiment.results import Diagnosis, Sample, Summary, WorkloadOutcome, rep_dir
from pyksm.experiment.runner import schedule
from pyksm.kernel.ksm import MergeFailures
from pyksm.report import aggregate, dataset, metrics, render

MIB = 1 << 20
LIFETIMES = {"edges_s": [0, 1, 30, 1e300], "ended": [1, 2, 3], "open_at_end": [0, 1, 0]}


def outcome(name: str, mib: int, seconds: float | None, done: bool = True) -> WorkloadOutcome:
    if not done:
        return WorkloadOutcome(name, "tar .", False, error="no DONE")
    return WorkloadOutcome(
        name, "tar .", True, 0, 10, mib * MIB, seconds, read_bytes_source="agent"
    )


def partial(name: str, mib: int, seconds: float) -> WorkloadOutcome:
    """No DONE by the run's end; QEMU's block statistics say what it read until then."""
    return WorkloadOutcome(
        name, "tar .", False, read_bytes=mib * MIB, host_seconds=seconds, error="no DONE",
        read_bytes_source="blockstats",
    )  # fmt: skip


def write_qemu_rep(base: Path, mode: str, rep: int, workloads: list[WorkloadOutcome]) -> None:
    """A repetition as qemu_runner writes it: snapshot oracle, the workloads'
    outcomes then the ballast's statistics in guest_stats, diagnosis and
    failed merges."""
    d = rep_dir(base, mode, rep)
    d.mkdir(parents=True)
    with (d / "samples.jsonl").open("w") as fh:
        for t in range(3):
            disk = {
                "guests_sharing_file": 50 * t,
                "guests_sharing_file_cross": 40 * t,
                "oracle_file_cross": 300,
            }
            # 500 opportunities, 400 of them disk blocks (the rest: boot content)
            row = Sample(float(t), 100 * t, 10 * t, 500, 400, counters={"cow_ksm": 7 * t, **disk})
            fh.write(row.to_json() + "\n")
    plus = mode.startswith("ksm++")
    summary = Summary(
        mode=mode,
        clk_tck=100,
        lifetimes=LIFETIMES,
        guest_stats=[*(asdict(w) for w in workloads), {"read_bytes": 0, "served_bytes": 0}],
        io_achieved=[None] * len(workloads),
        rep=rep,
        oracle="snapshot",
        diagnosis=Diagnosis(cow_ksm=5 * rep, hints_dropped_overflow=0 if plus else None),
        merge_failures=MergeFailures(lru=3 * rep, refs=1).as_dict() if plus else None,
    )
    (d / "summary.json").write_text(summary.to_json())


# (guest-a, guest-b) host seconds for 100 MiB each, per repetition: all
# guests' throughput ksm 1, 2, 4 MiB/s; ksm++ 0.5, 2, 2 MiB/s.
SECONDS = {"ksm": [100, 50, 25], "ksm++": [200, 50, 50]}


@pytest.fixture
def qemu(tmp_path: Path) -> Path:
    base = tmp_path / "out" / "qemu-kernel-build"
    base.mkdir(parents=True)
    modes = ["ksm", "ksm++"]
    (base / "config.json").write_text(
        json.dumps(
            {
                "scenario": {"name": "qemu-kernel-build", "description": "d"},
                "modes": modes,
                "repeat": 3,
                "order": [[s.rep, s.mode] for s in schedule(modes, 3)],
                "oracle": "snapshot",
            }
        )
    )
    for mode, secs in SECONDS.items():
        for rep, s in enumerate(secs, 1):
            write_qemu_rep(
                base, mode, rep, [outcome("guest-a", 100, s), outcome("guest-b", 100, s)]
            )
    (base / "complete").write_text("ok\n")
    return base


def test_all_guests_throughput_is_their_mib_over_their_seconds() -> None:
    # guest-a 2 MiB/s, guest-b 100 MiB in 150 s: 200 MiB in 200 s, not the rates' mean
    both, by_guest = metrics.guest_reads([outcome("a", 100, 50), outcome("b", 100, 150)])
    assert both == pytest.approx(1.0)
    assert by_guest == pytest.approx({"a": 2.0, "b": 100 / 150})
    # a workload that did not finish, or failed: no all-guests figure; the other keeps its own
    cut, by_guest = metrics.guest_reads([outcome("a", 100, 50), outcome("b", 0, None, False)])
    assert cut is None and by_guest == {"a": 2.0, "b": None}
    failed = WorkloadOutcome("a", "tar .", True, 1, 0, 5 * MIB, 2.0)
    assert failed.read_mib_s is None
    # the ledger scenarios have no workload outcomes
    assert metrics.guest_reads([]) == (None, None)


def test_guest_stats_are_read_as_workload_outcomes(qemu: Path) -> None:
    run = dataset.load(qemu).reps["ksm++"][0]
    assert run.summary is not None
    # the ballast's statistics (last in guest_stats) are not a workload
    assert [w.name for w in run.summary.workloads] == ["guest-a", "guest-b"]
    assert run.summary.workloads[0].read_mib_s == pytest.approx(0.5)
    ill = {"mode": "ksm", "clk_tck": 100, "lifetimes": {}}
    bad = asdict(outcome("guest-a", 1, 1.0)) | {"host_seconds": "1.0"}
    with pytest.raises(PyksmError, match=r"guest_stats\[0\]: field 'host_seconds' is str"):
        Summary.from_json(ill | {"guest_stats": [bad]}, "s.json")
    bad = asdict(outcome("guest-a", 1, 1.0)) | {"done": "yes"}
    with pytest.raises(PyksmError, match="field 'done' is str, expected bool"):
        Summary.from_json(ill | {"guest_stats": [bad]}, "s.json")


def test_throughput_ratio_is_per_repetition_pair(qemu: Path) -> None:
    st = aggregate.summarize(dataset.load(qemu))
    plus, base = st.modes["ksm++"].guest_reads, st.modes["ksm"].guest_reads
    assert plus is not None and base is not None
    assert base.all_guests.interval.values == pytest.approx([1.0, 2.0, 4.0])
    assert plus.all_guests.interval.values == pytest.approx([0.5, 2.0, 2.0])
    assert plus.by_guest["guest-b"].interval.median == pytest.approx(2.0)
    assert plus.all_guests.interval.kind == "bootstrap"
    # pairs 0.5/1, 2/2, 2/4 -> median 0.5; the medians' ratio would be 1
    assert plus.vs_ksm is not None
    assert plus.vs_ksm.interval.values == pytest.approx([0.5, 1.0, 0.5])
    assert plus.vs_ksm.reps == (1, 2, 3) and plus.vs_ksm.interval.median == pytest.approx(0.5)
    assert base.vs_ksm is None and plus.unfinished == ()


def test_a_repetition_with_an_unfinished_workload_has_no_pair(qemu: Path) -> None:
    d = rep_dir(qemu, "ksm", 2)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    write_qemu_rep(
        qemu, "ksm", 2, [outcome("guest-a", 100, 50), outcome("guest-b", 0, None, False)]
    )
    st = aggregate.summarize(dataset.load(qemu))
    base, plus = st.modes["ksm"].guest_reads, st.modes["ksm++"].guest_reads
    assert base is not None and plus is not None and plus.vs_ksm is not None
    assert base.unfinished == (2,) and base.all_guests.reps == (1, 3)
    assert base.by_guest["guest-a"].interval.n == 3 and base.by_guest["guest-b"].interval.n == 2
    assert plus.vs_ksm.reps == (1, 3) and plus.vs_ksm.interval.kind == "range"
    rows = {r["mode"]: r for r in render.read_throughput_rows(st)}
    assert rows["ksm"]["no figure"] == "rep 2" and rows["ksm"]["partial"] == ""
    assert rows["ksm++"]["vs ksm"] == "0.500x"  # [0.5, 0.5] shows once
    assert "[min, max] for n = 2" in render.read_throughput_note(st)


def test_the_throughput_table_and_its_caption(qemu: Path) -> None:
    st = aggregate.summarize(dataset.load(qemu))
    rows = {r["mode"]: r for r in render.read_throughput_rows(st)}
    assert list(rows) == ["ksm", "ksm++"]
    assert list(rows["ksm++"]) == [
        "mode", "n", "all guests (MiB/s)", "guest-a (MiB/s)", "guest-b (MiB/s)", "vs ksm",
        "partial", "no figure",
    ]  # fmt: skip
    assert rows["ksm"]["all guests (MiB/s)"] == "2.00 [1.00, 4.00]"  # no partial figure
    assert rows["ksm"]["vs ksm"] == "1.000x"
    assert (rows["ksm++"]["partial"], rows["ksm++"]["no figure"]) == ("", "")
    assert rows["ksm++"]["vs ksm"].startswith("0.500x [0.500x, ")
    note = render.read_throughput_note(st)
    assert "95 % percentile-bootstrap interval of the median" in note
    assert "ksmd's hint scanning" in note and "as well as in the collector" in note
    assert "[min, max]" not in note  # every stat here is over three repetitions


def test_ledger_results_have_no_throughput_table(tmp_path: Path) -> None:
    from tests.unit.test_report_reps import write_config, write_rep

    base = tmp_path / "kernel-build"
    write_config(base, ["ksm", "ksm++"], 1)
    write_rep(base, "ksm", 1, 100)
    write_rep(base, "ksm++", 1, 300)
    st = aggregate.summarize(dataset.load(base))
    assert render.read_throughput_rows(st) == []
    assert (
        aggregate.metrics_json([st])["experiments"][0]["modes"]["ksm++"]["guest_read_throughput"]
        is None
    )


def test_the_qemu_report_shows_diagnosis_failures_and_throughput(
    qemu: Path, tmp_path: Path
) -> None:
    exp = dataset.load(qemu)
    st = aggregate.summarize(exp)
    diag = {r["mode"]: r for r in render.counter_rows(st, aggregate.DIAGNOSIS)}
    assert diag["ksm"]["COW breaks of KSM pages"] == "10 [5, 15]"  # 5 * rep, from summary.json
    assert diag["ksm++"]["dropped: overflow"] == "0"
    fails = render.merge_failure_rows(exp, st)
    assert [(r["mode"], r["lru"], r["refs"]) for r in fails] == [("ksm++", "18", "3")]
    out = io.StringIO()
    render.terminal_summary([exp], Console(file=out, width=250))
    shown = out.getvalue()
    for title in ("diagnosis counters", "failed hinted merges by cause", "guest read throughput"):
        assert f"qemu-kernel-build: {title}" in shown
    text = render.write([exp], tmp_path / "r").read_text()
    for heading in ("Diagnosis counters", "Failed hinted merges by cause", "Guest read throughput"):
        assert f"<h3>{heading}</h3>" in text
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "guest_read_throughput" in doc["statistic"]
    reads = doc["experiments"][0]["modes"]["ksm++"]["guest_read_throughput"]
    assert set(reads) == {
        "all_guests_mib_per_s", "by_guest_mib_per_s", "vs_ksm_ratio", "unfinished_reps",
        "partial_reps", "by_guest_partial_reps", "vs_ksm_partial_reps",
    }  # fmt: skip
    assert reads["partial_reps"] == [] and reads["by_guest_partial_reps"] == {}
    assert reads["all_guests_mib_per_s"]["median"] == pytest.approx(2.0)
    assert reads["all_guests_mib_per_s"]["interval"] == "bootstrap"
    assert reads["by_guest_mib_per_s"]["guest-a"]["values"] == pytest.approx([0.5, 2.0, 2.0])
    assert reads["vs_ksm_ratio"]["median"] == pytest.approx(0.5)
    ksm = doc["experiments"][0]["modes"]["ksm"]
    assert ksm["guest_read_throughput"]["vs_ksm_ratio"] is None
    assert ksm["diagnosis"]["cow_ksm_count"]["values"] == [5, 10, 15]
    # disk blocks: ∫ sharing 100 of ∫ 800; across guests ∫ 600 of 800, 80 of it shared
    disk = ksm["disk_blocks"]
    assert disk["of_whole_ram_fraction"]["median"] == pytest.approx(400 / 500)
    assert disk["captured_fraction"]["median"] == pytest.approx(100 / 800)
    assert disk["across_guests_fraction"]["median"] == pytest.approx(0.75)
    assert disk["captured_across_guests_fraction"]["median"] == pytest.approx(80 / 600)
    rows = {r["mode"]: r for r in render.counter_rows(st, aggregate.DISK_BLOCKS)}
    assert rows["ksm++"]["across guests"] == "0.750"
    assert rows["ksm"]["of whole RAM"] == "0.800"
    assert "qemu-kernel-build: disk blocks (snapshot oracle)" in shown


def test_an_unfinished_workload_read_until_the_runs_end_has_a_partial_figure() -> None:
    cut = partial("b", 30, 60.0)
    assert cut.partial and cut.read_mib_s == pytest.approx(0.5)
    # with guest-a 100 MiB in 50 s: 130 MiB in 110 s over all guests
    both, by_guest = metrics.guest_reads([outcome("a", 100, 50), cut])
    assert both == pytest.approx(130 / 110) and by_guest == pytest.approx({"a": 2.0, "b": 0.5})
    # no block statistics (no QMP, a failed query, results from before): no figure
    for none in (
        outcome("b", 0, None, False),
        WorkloadOutcome("b", "tar .", False, read_bytes=MIB, host_seconds=2.0),
        WorkloadOutcome("b", "tar .", False, read_bytes=MIB, host_seconds=0.0,
                        read_bytes_source="blockstats"),
    ):  # fmt: skip
        assert not none.partial and none.read_mib_s is None
    # a finished workload's figures are the agent's, whatever the source says
    assert not outcome("a", 100, 50).partial


def test_outcomes_without_read_bytes_source_still_load_and_bad_sources_are_refused() -> None:
    ill = {"mode": "ksm", "clk_tck": 100, "lifetimes": {}}
    old = asdict(outcome("guest-a", 4, 2.0))
    del old["read_bytes_source"]  # summary.json of before partial figures
    (w,) = Summary.from_json(ill | {"guest_stats": [old]}, "s.json").workloads
    assert w.read_bytes_source is None and w.read_mib_s == pytest.approx(2.0)
    bad = asdict(partial("guest-a", 1, 1.0)) | {"read_bytes_source": "guess"}
    with pytest.raises(PyksmError, match=r"guest_stats\[0\]: field 'read_bytes_source' is 'guess'"):
        Summary.from_json(ill | {"guest_stats": [bad]}, "s.json")


def test_partial_figures_are_marked_in_the_throughput_table(qemu: Path, tmp_path: Path) -> None:
    d = rep_dir(qemu, "ksm", 2)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    # ksm rep 2: guest-b's tar did not finish, read 25 MiB in the run's 50 s
    write_qemu_rep(qemu, "ksm", 2, [outcome("guest-a", 100, 50), partial("guest-b", 25, 50)])
    st = aggregate.summarize(dataset.load(qemu))
    base, plus = st.modes["ksm"].guest_reads, st.modes["ksm++"].guest_reads
    assert base is not None and plus is not None and plus.vs_ksm is not None
    # every repetition has a figure: 125 MiB in 100 s for ksm rep 2
    assert base.all_guests.interval.values == pytest.approx([1.0, 1.25, 4.0])
    assert base.unfinished == () and base.partial == (2,)
    assert base.partial_by_guest == {"guest-b": (2,)}
    assert plus.partial == () and plus.partial_by_guest == {}
    assert plus.vs_ksm.reps == (1, 2, 3) and plus.vs_ksm_partial == (2,)
    rows = {r["mode"]: r for r in render.read_throughput_rows(st)}
    assert rows["ksm"]["all guests (MiB/s)"] == "1.25 [1.00, 4.00] (partial)"
    assert rows["ksm"]["guest-b (MiB/s)"].endswith(" (partial)")
    assert not rows["ksm"]["guest-a (MiB/s)"].endswith("(partial)")
    assert (rows["ksm"]["partial"], rows["ksm"]["no figure"]) == ("rep 2: guest-b", "")
    assert rows["ksm"]["vs ksm"] == "1.000x"  # ksm over itself is 1, partial or not
    # ksm++'s own figures are whole; its ratio's pair 2 has ksm's partial repetition
    assert not rows["ksm++"]["all guests (MiB/s)"].endswith("(partial)")
    assert rows["ksm++"]["vs ksm"].endswith(" (partial)") and rows["ksm++"]["partial"] == ""
    note = render.read_throughput_note(st)
    assert "(partial)" in note and "QMP block statistics" in note
    text = render.write([dataset.load(qemu)], tmp_path / "r").read_text()
    assert "1.25 [1.00, 4.00] (partial)" in text
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    reads = doc["experiments"][0]["modes"]["ksm"]["guest_read_throughput"]
    assert reads["partial_reps"] == [2] and reads["by_guest_partial_reps"] == {"guest-b": [2]}
    ratio = doc["experiments"][0]["modes"]["ksm++"]["guest_read_throughput"]
    assert ratio["vs_ksm_partial_reps"] == [2] and ratio["partial_reps"] == []
    assert "partial" in doc["statistic"]["guest_read_throughput"]

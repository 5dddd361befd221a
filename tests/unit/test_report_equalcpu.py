"""pyksm.report.equalcpu: hinted modes against linear KSM by ksmd CPU across
experiments, the bound at equal CPU, its table, figure and metrics.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from pyksm.experiment import hostinfo
from pyksm.report import aggregate, dataset, equalcpu, render
from tests.unit.test_report_reps import write_config, write_rep

HOST = hostinfo.HostInfo("cpu", 2, "6.1.0", "tcg", 0.1)


def experiment(base: Path, modes: dict[str, tuple[int, int]], host: hostinfo.HostInfo) -> Path:
    """``modes``: mode -> (pages_sharing, ksmd ticks over the 4 s run at
    CLK_TCK 100: 40 ticks are 10 % of a CPU), three repetitions each."""
    write_config(base, list(modes), 3)
    for rep in (1, 2, 3):
        for mode, (sharing, ticks) in modes.items():
            write_rep(
                base, mode, rep, sharing + rep if sharing else 0, ticks=ticks + rep if ticks else 0
            )
    hostinfo.save(base, host)
    return base


@pytest.fixture
def three(tmp_path: Path) -> list[Path]:
    """ksm++ at ~10 % CPU with ksm (less CPU) in one experiment, and linear
    KSM at two faster scan rates (more CPU) in two others."""
    return [
        experiment(
            tmp_path / "headline" / "kernel-build", {"ksm": (0, 32), "ksm++": (900, 40)}, HOST
        ),
        experiment(tmp_path / "eq116" / "kernel-build", {"ksm@116:20": (100, 48)}, HOST),
        experiment(tmp_path / "eq140" / "kernel-build", {"ksm@140:20": (300, 60)}, HOST),
    ]


def stats(paths: list[Path]) -> list[aggregate.ExperimentStats]:
    return [aggregate.summarize(e) for e in dataset.find(paths)]


def test_the_bound_is_the_cheapest_linear_mode_with_at_least_the_hinted_cpu(
    three: list[Path],
) -> None:
    rows = equalcpu.compare(stats(three))
    assert [(r.hinted.mode, r.linear.mode) for r in rows] == [
        ("ksm++", "ksm"),
        ("ksm++", "ksm@116:20"),
        ("ksm++", "ksm@140:20"),
    ]
    assert [r.bound for r in rows] == [False, True, False]
    ksm, eq116, eq140 = rows
    assert ksm.cpu_ratio is not None and eq116.cpu_ratio is not None
    assert eq140.cpu_ratio is not None
    assert ksm.cpu_ratio < 1 < eq116.cpu_ratio < eq140.cpu_ratio
    # ksm shared nothing: no ratio, not an infinite one.
    assert ksm.by_medians is None and ksm.by_ends is None
    h, lin = eq116.hinted.captured.interval, eq116.linear.captured.interval
    assert h.median is not None and lin.median is not None
    assert eq116.by_medians == pytest.approx(h.median / lin.median)
    assert h.low is not None and lin.high is not None
    assert eq116.by_ends == pytest.approx(h.low / lin.high)
    assert eq116.by_ends is not None and eq116.by_medians is not None
    assert eq116.by_ends <= eq116.by_medians


def test_no_bound_when_no_linear_mode_had_as_much_cpu(tmp_path: Path) -> None:
    base = experiment(
        tmp_path / "a" / "apache",
        {"ksm": (0, 32), "ksm@116:20": (10, 40), "ksm++": (900, 60)},
        HOST,
    )
    rows = equalcpu.compare(stats([base]))
    assert len(rows) == 2 and not any(r.bound for r in rows)


def test_one_linear_mode_is_left_to_the_experiments_own_ratios(tmp_path: Path) -> None:
    base = experiment(tmp_path / "a" / "apache", {"ksm": (0, 64), "ksm++": (900, 40)}, HOST)
    assert equalcpu.compare(stats([base])) == []


def test_a_hinted_mode_without_ksmd_cpu_has_no_cpu_ratio_and_the_report_is_written(
    tmp_path: Path,
) -> None:
    base = experiment(
        tmp_path / "a" / "no-io", {"ksm": (0, 32), "ksm@116:20": (0, 40), "ksm++": (0, 0)}, HOST
    )
    rows = equalcpu.compare(stats([base]))
    assert len(rows) == 2 and all(r.cpu_ratio is None for r in rows)
    assert [r.bound for r in rows] == [True, False]
    out = tmp_path / "report"
    render.write(dataset.find([base]), out)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["equal_cpu"][0]["linear_over_hinted_ksmd_cpu_ratio"] is None


def test_other_machines_scenarios_and_families_are_not_compared(tmp_path: Path) -> None:
    other = hostinfo.HostInfo("another cpu", 2, "6.1.0", "tcg", 0.1)
    paths = [
        experiment(tmp_path / "a" / "kernel-build", {"ksm++": (900, 40)}, HOST),
        experiment(tmp_path / "b" / "kernel-build", {"ksm": (0, 32)}, HOST),
        experiment(tmp_path / "c" / "kernel-build", {"ksm@116:20": (100, 48)}, other),
        experiment(tmp_path / "d" / "apache", {"ksm@140:20": (100, 60)}, HOST),
        experiment(tmp_path / "e" / "kernel-build", {"ksm-advisor": (100, 60)}, HOST),
        experiment(tmp_path / "f" / "kernel-build", {"ksm@140:20": (300, 60)}, HOST),
    ]
    rows = equalcpu.compare(stats(paths))
    assert [(r.linear.mode, r.linear.path.parent.name) for r in rows] == [
        ("ksm", "b"),
        ("ksm@140:20", "f"),
    ]


@pytest.mark.parametrize(
    ("mode", "family"),
    [
        ("ksm", "ksm"),
        ("ksm@116:20", "ksm"),
        ("ksm++", "ksm"),
        ("ksm++=4:1", "ksm"),
        ("ksm++-adaptive", "ksm"),
        ("ksm++@140:20", "ksm"),
        ("ksm++-nosmart", "ksm-nosmart"),
        ("ksm-advisor@140:20", "ksm-advisor"),
        ("ksm++-advisor", "ksm-advisor"),
        ("ksm++-advisor-adaptive", "ksm-advisor"),
    ],
)
def test_family(mode: str, family: str) -> None:
    assert equalcpu.family(mode) == family


def test_a_directory_given_twice_and_results_without_host_json_count_once_or_not(
    three: list[Path], tmp_path: Path
) -> None:
    assert len(equalcpu.compare(stats([*three, three[1]]))) == 3
    (three[2] / "host.json").unlink()
    assert [r.linear.mode for r in equalcpu.compare(stats(three))] == ["ksm", "ksm@116:20"]


def test_the_terminal_summary_shows_the_table_and_its_note(three: list[Path]) -> None:
    console = Console(file=io.StringIO(), width=250)
    render.terminal_summary(dataset.find(three), console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "hinted against linear KSM by ksmd CPU" in text and "bound" in text
    assert "lower bound of the ratio at equal ksmd CPU" in text


def test_report_has_the_table_figure_and_json_and_keeps_every_png(
    three: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    index = render.write(dataset.find(three), out)
    page = index.read_text()
    assert "Hinted against linear KSM by ksmd CPU" in page
    assert (out / "kernel-build-cpu-sharing.png").stat().st_size > 0
    # Three experiments of one scenario: three sets of PNGs, none overwritten.
    for stem in ("kernel-build", "kernel-build-2", "kernel-build-3"):
        assert (out / f"{stem}-merges.png").exists()
    doc = json.loads((out / "metrics.json").read_text())
    bound = [r for r in doc["equal_cpu"] if r["lower_bound_at_equal_cpu"]]
    assert [(r["hinted_mode"], r["linear_mode"]) for r in bound] == [("ksm++", "ksm@116:20")]
    assert isinstance(bound[0]["captured_sharing_ratio_by_interval_ends"], float)
    assert doc["equal_cpu"][0]["captured_sharing_ratio_by_medians"] is None


def test_one_experiment_without_linear_twins_has_no_section(tmp_path: Path) -> None:
    base = experiment(tmp_path / "a" / "kernel-build", {"ksm++": (900, 40)}, HOST)
    out = tmp_path / "report"
    page = render.write(dataset.find([base]), out).read_text()
    assert "Hinted against linear KSM" not in page
    assert json.loads((out / "metrics.json").read_text())["equal_cpu"] == []

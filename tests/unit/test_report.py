"""Report metrics on constructed samples, and the results loader's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyksm.errors import PyksmError
from pyksm.report import dataset, metrics, render, validation


def write_run(
    base: Path,
    mode: str,
    sharing: list[int],
    oracle: list[int],
    ticks: list[int],
    torn: bool = False,
) -> None:
    d = base / mode
    d.mkdir(parents=True)
    with (d / "samples.jsonl").open("w") as fh:
        for t, (s, o, k) in enumerate(zip(sharing, oracle, ticks, strict=True)):
            fh.write(
                json.dumps(
                    {
                        "t": float(t),
                        "pages_sharing": s,
                        "oracle": o,
                        "oracle_file": 0,
                        "ksmd_ticks": k,
                        "hints_received": 10 * t,
                    }
                )
                + "\n"
            )
        if torn:
            fh.write('{"t": 99, "pages_sha')
    (d / "summary.json").write_text(
        json.dumps(
            {
                "mode": mode,
                "clk_tck": 100,
                "lifetimes": {
                    "edges_s": [0, 1, 30, float("inf")],
                    "ended": [1, 2, 3],
                    "open_at_end": [0, 1, 0],
                },
            }
        )
    )


@pytest.fixture
def results(tmp_path: Path) -> Path:
    base = tmp_path / "kernel-build"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps(
            {
                "scenario": {"name": "kernel-build", "description": "d"},
                "modes": ["ksm", "ksm++"],
                "pages_to_scan": 100,
                "sleep_millisecs": 20,
            }
        )
    )
    write_run(base, "ksm", [0, 0, 10, 20, 40], [0, 100, 100, 100, 100], [0, 10, 20, 30, 40])
    write_run(
        base,
        "ksm++",
        [0, 50, 90, 100, 100],
        [0, 100, 100, 100, 100],
        [0, 10, 20, 30, 41],
        torn=True,
    )
    (base / "complete").write_text("ok\n")
    return base


def test_captured_sharing_and_times(results: Path) -> None:
    exp = dataset.load(results)
    ksm = metrics.compute(exp.reps["ksm"][0])
    plus = metrics.compute(exp.reps["ksm++"][0])
    # trapezoids: ksm (0+0+10+20+40 halves...) = 0+5+15+30 = 50; oracle = 50+100+100+100 = 350
    assert ksm.captured == pytest.approx(50 / 350)
    assert plus.captured == pytest.approx((25 + 70 + 95 + 100) / 350)
    assert ksm.t50 is None and ksm.t90 is None
    assert plus.t50 == 1.0 and plus.t90 == 2.0
    assert ksm.ksmd_cpu_pct == pytest.approx(40 / 100 / 4 * 100)
    assert plus.hints_received == 40


def test_t90_is_when_the_share_holds_from_then_on(tmp_path: Path) -> None:
    # 95 % at t=1 but 40 % at t=2: t90 is 3, when it reached 90 % for good.
    write_run(tmp_path, "ksm++", [0, 95, 40, 95, 95], [0, 100, 100, 100, 100], [0, 1, 2, 3, 4])
    run = dataset.load_mode("s", tmp_path / "ksm++")
    assert metrics.time_to_fraction(run, 0.9) == 3.0
    assert metrics.time_to_fraction(run, 0.3) == 1.0
    write_run(tmp_path, "ksm", [0, 95, 95, 95, 40], [0, 100, 100, 100, 100], [0, 1, 2, 3, 4])
    assert metrics.time_to_fraction(dataset.load_mode("s", tmp_path / "ksm"), 0.9) is None


def test_torn_last_line_is_kept_out_but_earlier_samples_stay(results: Path) -> None:
    run = dataset.load(results).reps["ksm++"][0]
    assert np.array_equal(run.t, [0, 1, 2, 3, 4])


def test_report_writes_html_with_embedded_pngs(results: Path, tmp_path: Path) -> None:
    index = render.write([dataset.load(results)], tmp_path / "report")
    text = index.read_text()
    assert text.count("data:image/png;base64,") == 2
    assert "kernel-build" in text and "PARTIAL" not in text
    assert (tmp_path / "report" / "kernel-build-merges.png").stat().st_size > 1000


def test_partial_results_are_marked(results: Path, tmp_path: Path) -> None:
    (results / "complete").unlink()
    exp = dataset.load(results)
    assert not exp.complete
    assert "PARTIAL" in render.write([exp], tmp_path / "r").read_text()


def test_not_a_results_dir(tmp_path: Path) -> None:
    with pytest.raises(PyksmError, match=r"no config\.json"):
        dataset.load(tmp_path)
    with pytest.raises(PyksmError, match="no experiment results"):
        dataset.find([tmp_path])


def test_cpu_by_task_and_guest_pace(tmp_path: Path) -> None:
    """The CPU table shares out each task's ticks over the run (% of one CPU,
    guests summed) and the guest I/O column is the slowest guest's pace."""
    d = tmp_path / "apache" / "ksm++"
    d.mkdir(parents=True)
    (tmp_path / "apache" / "config.json").write_text(
        json.dumps({"scenario": {"name": "apache"}, "modes": ["ksm++"]})
    )
    rows = [
        {
            "t": 0.0,
            "pages_sharing": 0,
            "oracle": 1,
            "oracle_file": 0,
            "ksmd_ticks": 0,
            "pages_scanned": 1000,
        },
        {
            "t": 10.0,
            "pages_sharing": 1,
            "oracle": 1,
            "oracle_file": 0,
            "ksmd_ticks": 50,
            "pages_scanned": 6000,
            "cpu_ticks": {
                "ksmd": 50,
                "runner": 100,
                "guest-a": 300,
                "guest-b": 200,
                "collector": 7,
            },
            "idle_ticks": 1343,
        },
    ]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(
        json.dumps(
            {
                "mode": "ksm++",
                "clk_tck": 100,
                "lifetimes": {},
                "io_achieved": [0.97, 0.5, None],
                "hint_visits": {"merged": 30, "first": 50, "missed": 10, "traced": 90, "lost": 0},
            }
        )
    )
    exp = dataset.load(tmp_path / "apache")
    m = metrics.compute(exp.reps["ksm++"][0])
    assert m.cpu_by_task == pytest.approx(
        {"ksmd": 5.0, "runner": 10.0, "collector": 0.7, "guests": 50.0, "idle": 134.3}
    )
    assert m.ksmd_us_per_page == pytest.approx(0.5 / 5000 * 1e6)
    assert m.io_achieved == 0.5
    (row,) = render.cpu_rows(exp)
    assert row == {
        "mode": "ksm++",
        "ksmd": "5",
        "guests": "50",
        "collector": "1",
        "runner": "10",
        "idle": "134",
    }
    # one repetition, below pace: marked, with how many of how many
    (mrow,) = render.metric_rows(exp)
    assert (mrow["mode"], mrow["guest I/O"]) == ("ksm++ †", "50% †1/1")
    (hv,) = render.hint_visit_rows(exp)
    assert (hv["merged"], hv["first"], hv["missed"], hv["other"]) == ("30", "50", "10", "0")
    assert hv["missed / (missed + merged)"] == "25%"


def test_the_report_says_which_oracle(results: Path, tmp_path: Path) -> None:
    exp = dataset.load(results)
    assert validation.oracle_kind(exp) == "ledger"  # results from before the field
    assert "content ledgers" in validation.oracle_note(exp)
    assert validation.validation_rows(exp) == []
    cfg = json.loads((results / "config.json").read_text())
    cfg["oracle"] = "snapshot"
    cfg["scenario"]["snapshot_interval_s"] = 10.0
    (results / "config.json").write_text(json.dumps(cfg))
    summary_path = results / "ksm++" / "summary.json"
    doc = json.loads(summary_path.read_text())
    doc |= {
        "oracle": "snapshot",
        "validation": {
            "snapshots": 18,
            "snapshot_seconds_mean": 2.5,
            "merged_pages_checked": 1000,
            "precision": 1.0,
            "long_lived_s": 30.0,
            "long_lived_recall": 0.9,
            "long_lived": 50,
            "peak_opportunities": 4000,
        },
    }
    summary_path.write_text(json.dumps(doc))
    exp = dataset.load(results)
    note = validation.oracle_note(exp)
    assert "snapshots of the real guests' RAM every 10.0 s" in note
    (row,) = validation.validation_rows(exp)
    assert row["mode"] == "ksm++" and row["precision"] == "1.0000"
    assert row["recall (lived ≥ 30.0 s)"] == "0.900"
    html_path = render.write([exp], tmp_path / "out")
    page = html_path.read_text()
    assert "Merges validated (snapshot oracle)" in page and "every 10.0 s" in page

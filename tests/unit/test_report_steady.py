"""The report of a steady scenario: the steady columns of the headline table,
the captured-sharing figure, metrics.json's steady_state and diagnosis
sections; other scenarios keep their report as it was."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from pyksm.analysis import steady
from pyksm.experiment.results import Diagnosis, Sample, Summary, rep_dir
from pyksm.experiment.runner import schedule
from pyksm.report import aggregate, dataset, render

ORACLE = 1000
MINUTES = 20


def write_rep(
    base: Path,
    mode: str,
    rep: int,
    fraction: Any,
    seconds: int = MINUTES * 60,
    cow_per_s: int = 0,
    diagnosis: Diagnosis | None = None,
) -> None:
    """pages_sharing = fraction(t) x ORACLE each second; cow_ksm grows by cow_per_s."""
    d = rep_dir(base, mode, rep)
    d.mkdir(parents=True)
    with (d / "samples.jsonl").open("w") as fh:
        for t in range(seconds + 1):
            fh.write(
                Sample(
                    t=float(t),
                    pages_sharing=round(float(fraction(t)) * ORACLE),
                    ksmd_ticks=t,
                    oracle=ORACLE,
                    oracle_file=ORACLE,
                    counters={"cow_ksm": 7 + cow_per_s * t, "hints_dropped_age": 0},
                ).to_json()
                + "\n"
            )
    summary = Summary(
        mode=mode, clk_tck=100, lifetimes={}, io_achieved=[1.0, 1.0], rep=rep, diagnosis=diagnosis
    )
    (d / "summary.json").write_text(summary.to_json())


def write_config(base: Path, modes: list[str], repeat: int, window: float | None) -> None:
    base.mkdir(parents=True)
    scenario: dict[str, Any] = {"name": base.name, "description": "d"}
    if window is not None:
        scenario["steady_window_s"] = window
    cfg = {
        "scenario": scenario,
        "modes": modes,
        "repeat": repeat,
        "order": [[s.rep, s.mode] for s in schedule(modes, repeat)],
        "pages_to_scan": 100,
        "sleep_millisecs": 20,
    }
    (base / "config.json").write_text(json.dumps(cfg))
    (base / "complete").write_text("ok\n")


def _flat(level: float, rep: int) -> Any:
    noise = np.random.default_rng(rep).normal(0, 0.01, MINUTES * 60 + 1)
    return lambda t: level + noise[t]


@pytest.fixture
def steady_run(tmp_path: Path) -> Path:
    """ksm++ flat at 0.85; ksm declining from 0.6 by 0.1 per 10 minutes; 3 reps."""
    base = tmp_path / "out" / "steady"
    write_config(base, ["ksm", "ksm++"], 3, 600.0)
    for rep in (1, 2, 3):
        write_rep(base, "ksm", rep, lambda t: 0.6 - 0.1 * t / 600, cow_per_s=1)
        # rep 3 has no diagnosis in its summary: it comes from the samples
        diag = Diagnosis(cow_ksm=100 * rep, hints_dropped_age=rep) if rep < 3 else None
        write_rep(base, "ksm++", rep, _flat(0.85, rep), cow_per_s=2, diagnosis=diag)
    return base


def test_the_steady_state_of_each_mode_over_its_repetitions(steady_run: Path) -> None:
    exp = dataset.load(steady_run)
    assert exp.steady_window_s == 600
    st = aggregate.summarize(exp)
    plus, ksm = st.modes["ksm++"], st.modes["ksm"]
    assert plus.steady is not None and ksm.steady is not None
    cap = plus.steady["captured_sharing_fraction"].interval
    assert cap.n == 3 and cap.median == pytest.approx(0.85, abs=0.005)
    assert ksm.steady["captured_sharing_fraction"].interval.median == pytest.approx(
        0.6 - 0.1 * 900 / 600, abs=0.005
    )
    pt, kt = plus.trend, ksm.trend
    assert pt is not None and kt is not None
    assert pt.verdict == steady.NO_DOWNWARD and pt.reps_no_downward == 3
    assert kt.verdict == steady.DOWNWARD and kt.reps_no_downward == 0
    assert kt.slope == pytest.approx(-0.1, abs=1e-3) and kt.interval == "bootstrap"


def test_the_headline_row_shows_the_window_and_the_trend(steady_run: Path) -> None:
    st = aggregate.summarize(dataset.load(steady_run))
    rows = {r["mode"]: r for r in render.mode_rows(st.modes)}
    cols = list(rows["ksm++"])
    # beside the whole run's captured sharing
    assert cols.index("captured, last 10 min") == cols.index("vs ksm") + 1
    assert rows["ksm++"]["captured, last 10 min"].startswith("0.85")
    assert rows["ksm++"]["trend (/10 min)"].endswith("no downward trend (3/3 reps flat or up)")
    assert " downward trend (0/3 reps flat or up)" in rows["ksm"]["trend (/10 min)"]
    assert rows["ksm"]["trend (/10 min)"].startswith("-0.100")
    reps = render.rep_rows(st)
    assert len(reps) == 6 and all("no downward" in r["trend (/10 min)"] for r in reps
                                  if r["mode"] == "ksm++")  # fmt: skip


def test_one_repetition_shows_sens_interval(tmp_path: Path) -> None:
    base = tmp_path / "steady"
    write_config(base, ["ksm++"], 1, 600.0)
    write_rep(base, "ksm++", 1, lambda t: 0.9 - 0.05 * t / 600)
    st = aggregate.summarize(dataset.load(base))
    trend = st.modes["ksm++"].trend
    assert trend is not None and trend.interval == "sen"
    assert trend.low is not None and trend.high is not None
    assert trend.low <= -0.05 <= trend.high < 0 and trend.verdict == steady.DOWNWARD
    (row,) = render.mode_rows(st.modes)
    assert row["trend (/10 min)"].startswith("-0.050 [") and "reps" not in row["trend (/10 min)"]


def test_a_short_steady_run_says_last_half(tmp_path: Path) -> None:
    base = tmp_path / "steady"
    write_config(base, ["ksm"], 1, 600.0)
    write_rep(base, "ksm", 1, lambda t: 0.5, seconds=300)
    st = aggregate.summarize(dataset.load(base))
    (row,) = render.mode_rows(st.modes)
    assert row["captured, last half"] == "0.500"
    assert st.modes["ksm"].steady is not None
    assert st.modes["ksm"].steady["window_s"].interval.median == 150


def test_metrics_json_has_steady_state_and_diagnosis_as_numbers(
    steady_run: Path, tmp_path: Path
) -> None:
    index = render.write([dataset.load(steady_run)], tmp_path / "r")
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert "Theil-Sen" in doc["statistic"]["steady_state"]
    plus = doc["experiments"][0]["modes"]["ksm++"]
    sd = plus["steady_state"]
    assert sd["captured_sharing_fraction"]["median"] == pytest.approx(0.85, abs=0.005)
    assert sd["window_s"]["values"] == [600.0, 600.0, 600.0]
    assert (sd["no_downward_trend_count"], sd["downward_trend_count"]) == (3, 0)
    assert sd["headline_no_downward_trend_count"] == 1
    diag = plus["diagnosis"]
    # reps 1, 2 from their summaries; rep 3 from its samples (2 per s over 1200 s)
    assert diag["cow_ksm_count"]["values"] == [100, 200, 2400]
    assert diag["hints_dropped_age_count"]["values"] == [1, 2, 0]
    assert diag["hints_dropped_overflow_count"]["n"] == 0  # no counter: no value
    for section in (sd, diag):
        for key, value in section.items():
            assert key.endswith(("_s", "_fraction", "_count")), key
            leaves = value.values() if isinstance(value, dict) else [value]
            assert all(v is None or isinstance(v, int | float | list | str) for v in leaves)
    text = index.read_text()
    assert text.count("data:image/png;base64,") == 3
    assert "Diagnosis counters" in text and "Theil-Sen" in text
    assert (tmp_path / "r" / "steady-steady.png").stat().st_size > 1000


def test_the_diagnosis_table_per_mode(steady_run: Path) -> None:
    st = aggregate.summarize(dataset.load(steady_run))
    rows = {r["mode"]: r for r in render.counter_rows(st, aggregate.DIAGNOSIS)}
    assert rows["ksm"]["COW breaks of KSM pages"] == "1200"  # all reps alike: once
    assert rows["ksm++"]["COW breaks of KSM pages"] == "200 [100, 2400]"
    assert rows["ksm++"]["dropped: overflow"] == ""
    out = io.StringIO()
    render.terminal_summary([dataset.load(steady_run)], Console(file=out, width=250))
    printed = out.getvalue()
    assert "steady: diagnosis counters" in printed and "no downward trend" in printed


def test_other_scenarios_have_no_steady_columns_or_figure(tmp_path: Path) -> None:
    base = tmp_path / "apache"
    write_config(base, ["ksm"], 1, None)
    write_rep(base, "ksm", 1, lambda t: 0.5, seconds=180)
    exp = dataset.load(base)
    assert exp.steady_window_s is None
    st = aggregate.summarize(exp)
    assert st.modes["ksm"].steady is None and st.modes["ksm"].trend is None
    (row,) = render.mode_rows(st.modes)
    assert not any(c.startswith(("captured, ", "trend")) for c in row)
    render.write([exp], tmp_path / "r")
    assert not (tmp_path / "r" / "apache-steady.png").exists()
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["experiments"][0]["modes"]["ksm"]["steady_state"] is None


@pytest.mark.parametrize("window", [0, -5, "600", True, None])
def test_a_config_without_a_usable_window_is_not_steady(tmp_path: Path, window: Any) -> None:
    base = tmp_path / "s"
    write_config(base, ["ksm"], 1, None)
    cfg = json.loads((base / "config.json").read_text())
    cfg["scenario"]["steady_window_s"] = window
    (base / "config.json").write_text(json.dumps(cfg))
    write_rep(base, "ksm", 1, lambda t: 0.5, seconds=10)
    assert dataset.load(base).steady_window_s is None

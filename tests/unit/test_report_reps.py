"""The report over repetitions: medians with intervals, ratios per pair,
metrics.json as numbers, below-pace flags, and old single-run results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment.results import Load, Sample, Summary, rep_dir
from pyksm.experiment.runner import schedule
from pyksm.report import aggregate, dataset, render

ORACLE = 1000


def write_rep(
    base: Path,
    mode: str,
    rep: int | None,
    sharing: int,
    ticks: int = 40,
    pace: float | None = 1.0,
    reach: int = 1,
) -> None:
    """A repetition through the typed writers: pages_sharing 0 until t=reach,
    then ``sharing`` to t=4 against an oracle of ORACLE. rep None: the
    single-run layout (MODE/samples.jsonl)."""
    d = base / mode if rep is None else rep_dir(base, mode, rep)
    d.mkdir(parents=True)
    with (d / "samples.jsonl").open("w") as fh:
        for t in range(5):
            fh.write(
                Sample(
                    t=float(t),
                    pages_sharing=sharing if t >= reach else 0,
                    ksmd_ticks=ticks * t // 4,
                    oracle=ORACLE,
                    oracle_file=ORACLE,
                    cpu_ticks={"ksmd": ticks * t // 4, "guest-a": 10 * t},
                    counters={"pages_scanned": 1000 * t, "hints_received": 5 * t},
                ).to_json()
                + "\n"
            )
    summary = Summary(
        mode=mode,
        clk_tck=100,
        lifetimes={"edges_s": [0, 1, 30, 1e300], "ended": [1, 2, 3], "open_at_end": [0, 1, 0]},
        io_achieved=[pace, 1.0] if pace is not None else [None],
        rep=rep,
        load=None if rep is None else Load(4.0, 800, 200 + rep, rep),
    )
    (d / "summary.json").write_text(summary.to_json())


def write_config(base: Path, modes: list[str], repeat: int | None) -> None:
    cfg: dict[str, Any] = {
        "scenario": {"name": base.name, "description": "d"},
        "modes": modes,
        "pages_to_scan": 100,
        "sleep_millisecs": 20,
    }
    if repeat is not None:
        cfg |= {"repeat": repeat, "order": [[s.rep, s.mode] for s in schedule(modes, repeat)]}
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps(cfg))
    (base / "complete").write_text("ok\n")


@pytest.fixture
def three(tmp_path: Path) -> Path:
    """kernel-build, ksm and ksm++, three repetitions each; ksm++ rep 2 below pace."""
    base = tmp_path / "out" / "kernel-build"
    write_config(base, ["ksm", "ksm++"], 3)
    for rep, (k, p) in enumerate([(100, 300), (200, 800), (400, 800)], 1):
        write_rep(base, "ksm", rep, k, ticks=40)
        write_rep(base, "ksm++", rep, p, ticks=40 + 20 * rep, pace=0.5 if rep == 2 else 0.99)
    return base


def test_each_mode_has_its_repetitions_and_medians(three: Path) -> None:
    exp = dataset.load(three)
    assert [r.rep for r in exp.reps["ksm++"]] == [1, 2, 3] and exp.repeated and exp.complete
    st = aggregate.summarize(exp)
    cap = st.modes["ksm"].stats["captured_sharing_fraction"]
    # sharing from t=1: trapezoids (s/2 + 3 s) over 4 * ORACLE
    assert cap.interval.values == pytest.approx([0.1 * 3.5 / 4, 0.2 * 3.5 / 4, 0.4 * 3.5 / 4])
    assert cap.reps == (1, 2, 3) and cap.interval.n == 3 and cap.interval.kind == "bootstrap"
    assert cap.interval.median == pytest.approx(0.2 * 3.5 / 4)


def test_ratios_are_per_repetition_pair_not_of_medians(three: Path) -> None:
    st = aggregate.summarize(dataset.load(three))
    vs = st.modes["ksm++"].ratios["captured_sharing_vs_ksm_ratio"]
    # pairs 300/100, 800/200, 800/400 -> median 3; the medians' ratio would be 4
    assert vs.interval.values == pytest.approx([3.0, 4.0, 2.0])
    assert vs.interval.median == pytest.approx(3.0)
    cpu = st.modes["ksm++"].ratios["ksmd_cpu_vs_ksm_ratio"]
    assert cpu.interval.values == pytest.approx([1.5, 2.0, 2.5])
    # both modes scanned alike here: per scanned page, the same ratios
    per_page = st.modes["ksm++"].ratios["ksmd_us_per_scanned_page_vs_ksm_ratio"]
    assert per_page.interval.values == pytest.approx([1.5, 2.0, 2.5])
    assert st.modes["ksm"].ratios == {}
    assert {r["mode"]: r["vs ksm"] for r in render.mode_rows(st.modes)}["ksm"] == "1.00x"


def test_a_repetition_below_pace_is_flagged_and_left_out_beside(three: Path) -> None:
    st = aggregate.summarize(dataset.load(three))
    assert st.modes["ksm++"].below_pace == [2] and st.modes["ksm"].below_pace == []
    assert (st.reps_below_pace, st.reps_total) == (1, 6)
    assert st.paced is not None
    paced = st.paced["ksm++"]
    assert [m.rep for m in paced.runs] == [1, 3]
    # pairs where both ran at pace: reps 1 and 3
    assert paced.ratios["captured_sharing_vs_ksm_ratio"].interval.values == pytest.approx([3, 2])
    assert paced.ratios["captured_sharing_vs_ksm_ratio"].interval.kind == "range"
    rows = {r["mode"]: r for r in render.mode_rows(st.modes)}
    assert set(rows) == {"ksm", "ksm++ †"}
    assert rows["ksm++ †"]["guest I/O"].endswith("†1/3")
    assert "1 of 6 repetitions ran below 95 %" in render.pace_note(st)
    flagged = [r for r in render.rep_rows(st) if r["below pace"]]
    assert [(r["mode"], r["rep"], r["run"], r["guest I/O"]) for r in flagged] == [
        ("ksm++", "2", "3", "50%")
    ]


def test_table_cells_show_median_and_interval(three: Path) -> None:
    st = aggregate.summarize(dataset.load(three))
    rows = {r["mode"]: r for r in render.mode_rows(st.modes)}
    plus = rows["ksm++ †"]
    assert plus["n"] == "3"
    assert plus["vs ksm"] == "3.00x [2.00x, 4.00x]"
    assert plus["t50 (s)"] == "1 [1, never]"  # rep 1 held 30 %: never 50 %
    assert "median [95 % bootstrap CI], n=3" in render.interval_note(st)
    order = [(r["run"], r["rep"], r["mode"]) for r in render.rep_rows(st)]
    assert order[:4] == [("1", "1", "ksm"), ("2", "1", "ksm++"), ("3", "2", "ksm++"),
                         ("4", "2", "ksm")]  # fmt: skip


def _leaves(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        return [x for k, v in obj.items() for x in _leaves(v, f"{path}/{k}")]
    if isinstance(obj, list):
        return [x for i, v in enumerate(obj) for x in _leaves(v, f"{path}[{i}]")]
    return [(path, obj)]


UNITS = ("_fraction", "_s", "_percent", "_mib", "_count", "_ratio", "_scanned_page", "_saved_page")


def test_metrics_json_holds_numbers_with_units(three: Path, tmp_path: Path) -> None:
    render.write([dataset.load(three)], tmp_path / "r")
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert doc["schema"] == aggregate.SCHEMA == "pyksm.report.metrics/2"
    assert doc["statistic"]["seed"] == 16 and doc["io_pace_ok_fraction"] == 0.95
    (exp,) = doc["experiments"]
    assert (exp["scenario"], exp["repeat"], exp["repetitions_below_pace"]) == (
        "kernel-build", 3, 1,
    )  # fmt: skip
    plus = exp["modes"]["ksm++"]
    assert plus["below_pace_reps"] == [2] and plus["n"] == 3
    for key, stat in {**plus["metrics"], **plus["vs_ksm"]}.items():
        assert key.endswith(UNITS), key
        assert set(stat) == {"median", "ci_low", "ci_high", "n", "interval", "values", "reps"}
    cap = plus["metrics"]["captured_sharing_fraction"]
    assert isinstance(cap["median"], float) and cap["ci_low"] <= cap["median"] <= cap["ci_high"]
    assert plus["vs_ksm"]["captured_sharing_vs_ksm_ratio"]["median"] == pytest.approx(3.0)
    assert plus["cpu_by_task_percent"]["ksmd"]["n"] == 3
    assert exp["paced_only"]["ksm++"]["n"] == 2
    # no formatted strings anywhere among the figures (names: an interval's kind, a baseline)
    for path, value in _leaves(exp["modes"]) + _leaves(exp["paced_only"]):
        named = path.endswith(("/interval", "/baseline_mode"))
        assert value is None or isinstance(value, int | float) or named, path
    assert plus["baseline_mode"] == "ksm"


def test_the_html_report_of_repetitions(three: Path, tmp_path: Path) -> None:
    text = render.write([dataset.load(three)], tmp_path / "r").read_text()
    assert "median [95 % bootstrap CI], n=3" in text
    assert "Repetitions at pace only (1 of 6 left out)" in text
    assert "Every repetition" in text and text.count("data:image/png;base64,") == 2
    assert (tmp_path / "r" / "kernel-build-merges.png").stat().st_size > 1000


def test_two_repetitions_show_their_range_and_never(tmp_path: Path) -> None:
    base = tmp_path / "apache"
    write_config(base, ["ksm", "ksm++"], 2)
    for rep in (1, 2):
        write_rep(base, "ksm", rep, 0)  # merged nothing: no ratio, t50 never
        write_rep(base, "ksm++", rep, 600 + 100 * rep, reach=rep)
    st = aggregate.summarize(dataset.load(base))
    rows = {r["mode"]: r for r in render.mode_rows(st.modes)}
    assert rows["ksm"]["t50 (s)"] == "never"  # both never: shown once
    assert rows["ksm++"]["t50 (s)"] == "2 [1, 2]"  # [min, max] of two; median 1.5
    assert rows["ksm++"]["vs ksm"] == "ksm ≈ 0"
    assert rows["ksm"]["vs ksm"] == "1.00x"
    assert st.paced is None and render.pace_note(st) == ""
    doc = aggregate.metrics_json([st])
    t50 = doc["experiments"][0]["modes"]["ksm"]["metrics"]["t50_s"]
    assert (t50["median"], t50["values"], t50["n"]) == (None, [None, None], 2)
    assert (
        doc["experiments"][0]["modes"]["ksm++"]["vs_ksm"]["captured_sharing_vs_ksm_ratio"]["n"] == 0
    )
    json.dumps(doc, allow_nan=False)


def test_old_single_run_results_still_render(tmp_path: Path) -> None:
    """MODE/samples.jsonl without repetitions, summaries without rep or load."""
    base = tmp_path / "kernel-build"
    write_config(base, ["ksm", "ksm++"], None)
    write_rep(base, "ksm", None, 100)
    write_rep(base, "ksm++", None, 800)
    exp = dataset.load(base)
    assert [r.rep for r in exp.all_runs] == [1, 1] and not exp.repeated and exp.complete
    st = aggregate.summarize(exp)
    rows = {r["mode"]: r for r in render.mode_rows(st.modes)}
    assert rows["ksm++"]["captured sharing"] == f"{0.8 * 3.5 / 4:.3f}"  # no interval
    assert rows["ksm++"]["vs ksm"] == "8.00x"
    assert rows["ksm++"]["guest I/O"] == "100%"
    text = render.write([exp], tmp_path / "r").read_text()
    assert "Every repetition" not in text and "n=1" in text
    doc = json.loads((tmp_path / "r" / "metrics.json").read_text())
    cap = doc["experiments"][0]["modes"]["ksm"]["metrics"]["captured_sharing_fraction"]
    assert (cap["n"], cap["ci_low"], cap["ci_high"], cap["interval"]) == (1, None, None, "value")
    assert doc["experiments"][0]["modes"]["ksm"]["metrics"]["cpu_idle_fraction"]["n"] == 0


def test_a_missing_repetition_keeps_the_others_and_is_partial(three: Path) -> None:
    (three / "complete").unlink()
    for f in (rep_dir(three, "ksm", 3)).iterdir():
        f.unlink()
    rep_dir(three, "ksm", 3).rmdir()
    exp = dataset.load(three)
    assert [r.rep for r in exp.reps["ksm"]] == [1, 2] and not exp.complete
    st = aggregate.summarize(exp)
    # ksm++ rep 3 has no partner: its ratio is left out
    assert st.modes["ksm++"].ratios["captured_sharing_vs_ksm_ratio"].reps == (1, 2)


def test_a_config_with_odd_modes_or_order_is_named_or_ignored(three: Path) -> None:
    cfg = json.loads((three / "config.json").read_text())
    (three / "config.json").write_text(json.dumps(cfg | {"order": [["x", "ksm"], 3]}))
    st = aggregate.summarize(dataset.load(three))
    assert {r["run"] for r in render.rep_rows(st)} == {""}  # order unknown: not guessed
    (three / "config.json").write_text(json.dumps(cfg | {"modes": ["ksm", "../x"]}))
    with pytest.raises(PyksmError, match=r"config\.json: field 'modes' holds '\.\./x'"):
        dataset.load(three)


def test_ksmd_cost_to_reach_ksms_peak_per_pair_and_per_saved_page(tmp_path: Path) -> None:
    base = tmp_path / "out" / "no-io"
    write_config(base, ["ksm", "ksm++"], 3)
    # rep 1: ksm reaches its 300 pages at t=3, ksm++ passes them at t=1
    write_rep(base, "ksm", 1, 300, reach=3)
    write_rep(base, "ksm++", 1, 600, reach=1)
    # rep 2: ksm++ never gets to ksm's peak
    write_rep(base, "ksm", 2, 300, reach=1)
    write_rep(base, "ksm++", 2, 200, reach=1)
    # rep 3: ksm shared less than REACH_FLOOR_PAGES: no pair; ksm++ shared nothing
    write_rep(base, "ksm", 3, aggregate.REACH_FLOOR_PAGES - 1, reach=1)
    write_rep(base, "ksm++", 3, 0)
    st = aggregate.summarize(dataset.load(base))
    reach = st.modes["ksm++"].ratios[aggregate.REACH_KEY]
    # ksmd ticks grow 10 per second: 0.1 s of CPU at t=1 against 0.3 s at t=3
    assert reach.reps == (1, 2)
    assert reach.interval.values == pytest.approx([1 / 3, float("inf")])
    assert aggregate.REACH_KEY not in st.modes["ksm"].ratios
    # 400 ms of ksmd CPU over a mean of (4 * 600) / 5 pages shared
    per_saved = st.modes["ksm++"].stats["ksmd_ms_per_saved_page"]
    assert per_saved.reps == (1, 2)  # rep 3 shared nothing: no figure
    assert per_saved.interval.values[0] == pytest.approx(400 / 480)
    rows = {r["mode"]: r for r in render.cost_rows(st.modes)}
    assert rows["ksm"]["CPU to ksm's peak vs ksm"] == "1.00x"
    assert rows["ksm++"]["CPU to ksm's peak vs ksm"] == "never [0.33x, never]"
    doc = aggregate.metrics_json([st])
    json.dumps(doc, allow_nan=False)
    assert aggregate.REACH_KEY in doc["experiments"][0]["modes"]["ksm++"]["vs_ksm"]


@pytest.mark.parametrize(
    ("mode", "present", "baseline"),
    [
        ("ksm", ["ksm", "ksm++"], None),
        ("ksm++", ["ksm", "ksm++"], "ksm"),
        ("ksm++-nosmart", ["ksm", "ksm-nosmart", "ksm++-nosmart"], "ksm-nosmart"),
        ("ksm++-nosmart", ["ksm", "ksm++-nosmart"], "ksm"),
        ("ksm++-advisor", ["ksm-advisor", "ksm++-advisor"], "ksm-advisor"),
        ("ksm++-adaptive", ["ksm", "ksm++-adaptive"], "ksm"),
        ("ksm++-advisor-adaptive", ["ksm", "ksm-advisor", "ksm++-advisor-adaptive"], "ksm-advisor"),
        ("ksm++-advisor-adaptive", ["ksm", "ksm++-advisor-adaptive"], "ksm"),
        ("ksm++=4:1", ["ksm", "ksm++=4:1"], "ksm"),
        ("ksm++@140:20", ["ksm", "ksm@140:20", "ksm++@140:20"], "ksm@140:20"),
        ("ksm-nosmart", ["ksm", "ksm-nosmart"], "ksm"),
        ("ksm-nosmart", ["ksm-nosmart", "ksm++-nosmart"], None),
        ("ksm++", ["ksm++", "ksm++-adaptive"], None),
    ],
)
def test_a_mode_is_compared_with_its_linear_twin_where_it_ran(
    mode: str, present: list[str], baseline: str | None
) -> None:
    assert aggregate.baseline_of(mode, present) == baseline


def test_nosmart_modes_pair_with_each_other_and_the_table_says_so(tmp_path: Path) -> None:
    base = tmp_path / "out" / "unique-io"
    modes = ["ksm", "ksm-nosmart", "ksm++-nosmart"]
    write_config(base, modes, 2)
    for rep in (1, 2):
        write_rep(base, "ksm", rep, 100, ticks=40)
        write_rep(base, "ksm-nosmart", rep, 200, ticks=20)
        write_rep(base, "ksm++-nosmart", rep, 400, ticks=30)
    st = aggregate.summarize(dataset.load(base))
    plus = st.modes["ksm++-nosmart"]
    assert plus.baseline == "ksm-nosmart"
    # against ksm-nosmart (400 / 200, 30 / 20 ticks), not ksm (4x, 0.75x)
    assert plus.ratios["captured_sharing_vs_ksm_ratio"].interval.values == pytest.approx([2, 2])
    assert plus.ratios["ksmd_cpu_vs_ksm_ratio"].interval.values == pytest.approx([1.5, 1.5])
    assert st.modes["ksm-nosmart"].ratios["ksmd_cpu_vs_ksm_ratio"].interval.values == (
        pytest.approx([0.5, 0.5])
    )
    doc = aggregate.metrics_json([st])["experiments"][0]["modes"]
    assert [doc[m]["baseline_mode"] for m in modes] == [None, "ksm", "ksm-nosmart"]
    assert "twin" in render.interval_note(st)


def test_without_ksm_the_twin_is_the_reference(tmp_path: Path) -> None:
    base = tmp_path / "out" / "unique-io"
    write_config(base, ["ksm-nosmart", "ksm++-nosmart"], 1)
    write_rep(base, "ksm-nosmart", 1, 300, ticks=20)
    write_rep(base, "ksm++-nosmart", 1, 300, ticks=30)
    st = aggregate.summarize(dataset.load(base))
    rows = {r["mode"]: r for r in render.cost_rows(st.modes)}
    assert rows["ksm-nosmart"]["CPU vs ksm"] == "1.00x"
    assert rows["ksm++-nosmart"]["CPU vs ksm"] == "1.50x"


def _add_visits(base: Path, mode: str, rep: int, costs: dict[str, dict[str, Any]]) -> None:
    path = rep_dir(base, mode, rep) / "summary.json"
    doc = json.loads(path.read_text())
    doc["ksmd_visits"] = costs
    path.write_text(json.dumps(doc))


def test_ksmd_visits_by_kind_are_summed_over_repetitions(tmp_path: Path) -> None:
    base = tmp_path / "out" / "unique-io"
    write_config(base, ["ksm", "ksm++"], 2)
    for rep in (1, 2):
        write_rep(base, "ksm", rep, 0)
        write_rep(base, "ksm++", rep, 0)
        _add_visits(
            base,
            "ksm++",
            rep,
            {
                "hinted": {
                    "visits": 100,
                    "merges": 10 * rep,
                    "visit_s": 0.02 * rep,
                    "hint_walks": 100,
                    "hint_walk_s": 0.01,
                }
            },
        )
    _add_visits(base, "ksm", 1, {"linear": {"visits": 1000, "visit_s": 0.1}})
    st = aggregate.summarize(dataset.load(base))
    rows = render.visit_rows(st.modes)
    assert [(r["mode"], r["reps"], r["kind"]) for r in rows] == [
        ("ksm", "1", "linear"),
        ("ksm++", "2", "hinted"),
    ]
    # (0.02 + 0.04) s over 200 visits; the hint-tree searches 0.02 s over 200
    assert rows[1]["µs / visit"] == "300.0" and rows[1]["of it: hint-tree search"] == "100.0"
    assert rows[1]["visits per rep"] == "100" and rows[0]["of it: hint-tree search"] == ""
    assert (rows[1]["merged per rep"], rows[0]["merged per rep"]) == ("15", "0")
    doc = aggregate.metrics_json([st])["experiments"][0]["modes"]
    assert doc["ksm++"]["ksmd_visits"]["hinted"]["us_per_visit"] == pytest.approx(300.0)
    assert doc["ksm"]["ksmd_visits"]["linear"]["visits_per_rep_count"] == 1000
    assert doc["ksm++"]["ksmd_visits"]["hinted"]["merges_per_rep_count"] == 15
    page = render.write([dataset.load(base)], tmp_path / "report").read_text()
    assert "ksmd visits by kind" in page and "300.0" in page


def test_a_corrupt_ksmd_visits_entry_is_one_clear_error(tmp_path: Path) -> None:
    base = tmp_path / "out" / "unique-io"
    write_config(base, ["ksm"], 1)
    write_rep(base, "ksm", 1, 0)
    _add_visits(base, "ksm", 1, {"linear": {"visits": "many"}})
    with pytest.raises(PyksmError, match="ksmd_visits"):
        aggregate.summarize(dataset.load(base))

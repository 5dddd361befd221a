"""Failed hinted merges by cause: the sysfs reader, the summary field, the
report's table and metrics.json (constructed files, no kernel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment.results import Diagnosis, Summary
from pyksm.kernel import ksm
from pyksm.kernel.ksm import MergeFailures
from pyksm.report import aggregate, dataset, metrics, render

CAUSES = ("unmapped", "locked", "split", "lru", "refs", "changed", "nomem")


def test_causes_are_the_kernels_counters() -> None:
    assert MergeFailures.causes() == CAUSES
    for name in MergeFailures.counter_names():
        knob = ksm.KNOBS[name]
        assert (knob.writable, knob.monotonic, knob.since) == (False, True, "KSM++")
        assert name in ksm.STATS and name in ksm.HINT_KNOBS


def test_from_counters_delta_and_total() -> None:
    names = MergeFailures.counter_names()
    a = MergeFailures.from_counters({n: i for i, n in enumerate(names)} | {"other": 5})
    b = MergeFailures.from_counters({n: 10 * i for i, n in enumerate(names)})
    assert a is not None and b is not None
    assert (b - a).as_dict() == {c: 9 * i for i, c in enumerate(CAUSES)}
    assert (b - a).total == 9 * sum(range(7))
    # an older kernel (or a sample from one): not there, not zeros
    assert MergeFailures.from_counters({n: 1 for n in names[:-1]}) is None
    assert MergeFailures.from_counters({n: True for n in names}) is None
    assert MergeFailures.from_counters({n: "3" for n in names}) is None


def test_ksm_reads_the_sysfs_files(tmp_path: Path) -> None:
    k = ksm.Ksm(tmp_path)
    assert k.merge_failures() is None
    for i, name in enumerate(MergeFailures.counter_names()):
        (tmp_path / name).write_text(f"{i}\n")
    got = k.merge_failures()
    assert got is not None and got.lru == 3 and got.nomem == 6
    assert "hint_pages_failed_refs" in k.state()
    (tmp_path / "hint_pages_failed_refs").write_text("garbage\n")
    assert k.merge_failures() is None


def _summary(**extra: object) -> dict[str, object]:
    return {"mode": "ksm++", "clk_tck": 100, "lifetimes": {}} | extra


def test_summary_field_is_typed() -> None:
    s = Summary.from_json(_summary(merge_failures={"refs": 3, "lru": 1}), "s.json")
    assert s.merge_failures == {"refs": 3, "lru": 1}
    assert json.loads(s.to_json())["merge_failures"] == {"refs": 3, "lru": 1}
    assert Summary.from_json(_summary(), "s.json").merge_failures is None
    with pytest.raises(PyksmError, match=r"s\.json merge_failures: field 'refs' is str"):
        Summary.from_json(_summary(merge_failures={"refs": "3"}), "s.json")
    with pytest.raises(PyksmError, match="field 'merge_failures' is list"):
        Summary.from_json(_summary(merge_failures=[1]), "s.json")


def _write_mode(
    base: Path, mode: str, rows: list[dict[str, object]], summary: dict[str, object]
) -> None:
    d = base / mode
    d.mkdir(parents=True)
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps(summary))


def _row(t: float, merged: int, failed: dict[str, int] | None) -> dict[str, object]:
    row: dict[str, object] = {
        "t": t,
        "pages_sharing": 1,
        "oracle": 1,
        "oracle_file": 0,
        "ksmd_ticks": 0,
        "hint_pages_merged": merged,
    }
    if failed is not None:
        row |= {f"hint_pages_failed_{c}": failed.get(c, 0) for c in CAUSES}
    return row


@pytest.fixture
def exp(tmp_path: Path) -> dataset.Experiment:
    base = tmp_path / "apache"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps({"scenario": {"name": "apache"}, "modes": ["ksm", "ksm++", "ksm++-adaptive"]})
    )
    # ksm: an unpatched-looking run, no counters at all
    _write_mode(
        base,
        "ksm",
        [_row(0, 0, None), _row(1, 0, None)],
        {"mode": "ksm", "clk_tck": 100, "lifetimes": {}},
    )
    # ksm++: the runner's delta in summary.json wins over the samples
    _write_mode(
        base,
        "ksm++",
        [_row(0, 100, {"refs": 50}), _row(1, 400, {"refs": 60, "lru": 40})],
        _summary(merge_failures={c: {"lru": 80, "refs": 20}.get(c, 0) for c in CAUSES}),
    )
    # ksm++-adaptive: no summary (cut short): from the first and last sample
    d = base / "ksm++-adaptive"
    d.mkdir()
    rows = [_row(0, 0, {"changed": 1}), _row(1, 900, {"changed": 101})]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dataset.load(base)


def test_metrics_take_the_summary_else_the_samples(exp: dataset.Experiment) -> None:
    assert metrics.compute(exp.reps["ksm"][0]).merge_failures is None
    plus = metrics.compute(exp.reps["ksm++"][0])
    assert plus.merge_failures is not None and plus.merge_failures["lru"] == 80
    assert plus.hint_pages_failed == 100
    adaptive = metrics.compute(exp.reps["ksm++-adaptive"][0])
    assert adaptive.merge_failures == {c: 100 if c == "changed" else 0 for c in CAUSES}


def test_report_table_and_metrics_json(exp: dataset.Experiment, tmp_path: Path) -> None:
    rows = render.merge_failure_rows(exp)
    assert [r["mode"] for r in rows] == ["ksm++", "ksm++-adaptive"]
    plus = rows[0]
    assert list(plus)[2 : 2 + len(CAUSES)] == list(CAUSES)
    assert (plus["lru"], plus["refs"], plus["failed"]) == ("80", "20", "100")
    assert plus["failed / (merged + failed)"] == "25%"  # 300 merged, 100 failed
    assert rows[1]["failed / (merged + failed)"] == "10%"  # 900 merged, 100 failed

    st = aggregate.summarize(exp)
    doc = json.loads(json.dumps(aggregate.metrics_json([st])))
    modes = doc["experiments"][0]["modes"]
    assert modes["ksm"]["merge_failures_count"] is None
    assert modes["ksm++"]["merge_failures_count"]["lru"] == 80
    assert modes["ksm++"]["metrics"]["hint_pages_failed_count"]["median"] == 100
    assert modes["ksm"]["metrics"]["hint_pages_failed_count"]["n"] == 0

    index = render.write([exp], tmp_path / "report")
    assert "Failed hinted merges by cause" in index.read_text()
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert (
        saved["experiments"][0]["modes"]["ksm++-adaptive"]["merge_failures_count"]["changed"] == 100
    )


def test_lru_drains_are_a_diagnosis_counter_and_a_column() -> None:
    knob = ksm.KNOBS["hint_lru_drains"]
    assert (knob.writable, knob.monotonic, knob.since) == (False, True, "KSM++")
    # not a cause: a drain is what ksmd did, not why a merge failed
    assert "hint_lru_drains" not in MergeFailures.counter_names()
    d = Diagnosis.between({"hint_lru_drains": 3}, {"hint_lru_drains": 10})
    assert d.hint_lru_drains == 7 and d.cow_ksm is None
    titles = [t for t, _ in aggregate.DIAGNOSIS.columns]
    assert "LRU drains" in titles

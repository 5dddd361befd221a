"""KSM++ on the patched kernel: KUnit suites, pyksm's wire format and writer."""

from __future__ import annotations

import json
from pathlib import Path

from pyksm.lab import ktap
from tests.vm.conftest import Boot, summarize

GUEST = Path(__file__).parent / "guest"


def test_kunit_suites_pass_at_boot(boot: Boot) -> None:
    result = boot(["true"])
    suites = ktap.parse(result.console_log.read_text(errors="replace"))
    ksm_suites = {n: s for n, s in suites.items() if "ksm" in n}
    assert ksm_suites, f"no KSM KUnit suite ran at boot; see {result.console_log}"
    for name, s in ksm_suites.items():
        summarize(
            f"kunit {name}: {len(s.passed)} passed, {len(s.failed)} failed, "
            f"{len(s.skipped)} skipped"
        )
        assert s.ok is True, f"{name}: failed cases {s.failed}"
        assert not s.failed
        assert s.passed


def test_python_wire_format_and_writer_against_the_kernel(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    out = tmp_path / "wire.json"
    result = boot([python, str(GUEST / "hint_wire.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    assert r["hints_supported"]
    assert r["missing_knobs"] == []
    assert r["raw_accepted"] == 2 and r["raw_received_delta"] == 2
    assert r["mixed_accepted"] == 2 and r["mixed_received_delta"] == 2
    assert r["rejected"] == {"EOPNOTSUPP": 1, "ESRCH": 1}
    assert r["invalid_delta_at_least"] >= 2
    assert r["text_received_delta"] == 1
    assert r["prometheus_has_hints"] and r["prometheus_has_self"]


def test_hinted_visits_are_traced_with_their_results(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """--trace-hints reads ksm:ksm_hint_page from tracefs: one event per
    hinted page, at its address, with the merge result, on CLOCK_MONOTONIC."""
    out = tmp_path / "trace.json"
    result = boot([python, str(GUEST / "hint_trace.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    assert r["available"]
    assert r["scanned"] >= 32
    assert r["visits"] == r["scanned"] and r["lost"] == 0
    assert r["inside"] == r["visits"]
    # Pages i and i + 16 are equal: hinted visits pair them (the linear steps
    # interleaved with them may get to some pairs first).
    assert r["pairs"] >= 1
    assert set(r["results"]) <= {"pair", "unstable", "stable", "none"}
    first, now = r["monotonic"]
    assert 0 < now - first < 120  # the trace clock is this process's monotonic clock


def test_hinted_pair_merges_past_stale_unstable_tree_nodes(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """Hinted pages keep a tree of their own: a hinted page finds its hinted
    partner even after every other node of the unstable tree went stale
    (rewritten since its insertion), which would send its search astray."""
    out = tmp_path / "tree.json"
    result = boot([python, str(GUEST / "hint_tree.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    attempts = json.loads(out.read_text())["attempts"]
    last = attempts[-1]
    summarize(f"hint tree: {attempts}")
    assert last["same_round"], f"every attempt straddled two rounds: {attempts}"
    assert last["merged"] == 1, f"the second hinted page did not merge: {attempts}"
    assert last["merging"] == 2

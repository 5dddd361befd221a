"""KSM++ on the patched kernel: KUnit suites, pyksm's wire format and writer."""

from __future__ import annotations

import json
from pathlib import Path

from pyksm.kernel import ksm
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
    assert r["madvise_supported"] and r["auto_intake"] == "madvise"
    assert r["madvise_accepted"] == 2 and r["madvise_received_delta"] == 2
    assert r["madvise_rejected"] == {"EOPNOTSUPP": 1, "ESRCH": 1}
    assert r["madvise_unaligned"] == 1
    assert r["prometheus_has_hints"] and r["prometheus_has_self"]
    assert r["merge_failures"] is not None
    assert list(r["merge_failures"]) == list(ksm.MergeFailures.causes())
    assert all(isinstance(v, int) and v >= 0 for v in r["merge_failures"].values())
    assert r["failed_le_unmerged"]


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


def test_index_and_intake_survive_allocation_failures(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """failslab on ksmd (30 % of its allocations, sleeping ones included)
    while pages are freed and faulted back at the same addresses under hints:
    the per-mm index fails to insert and to erase. The index may lose
    entries but must never point at a freed rmap_item, and the linear scan
    must never stall. An intake whose allocation fails reports ENOMEM and
    works again on the next write."""
    out = tmp_path / "faults.json"
    result = boot([python, str(GUEST / "index_faults.py"), str(out)], timeout=1200.0)
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    summarize(f"index faults: {r}")
    assert r["injected"] > 100, "failslab injected too few failures to test anything"
    assert r["full_scans_after"] is not None, "the linear scan stalled after the faults"
    assert r["full_scans_after"] >= 2
    assert r["wrong_pages"] == 0
    assert r["merged_after"], "hinted duplicates no longer merge"
    assert r["intake_faults"] == {"raw": "ENOMEM", "text": "ENOMEM"}

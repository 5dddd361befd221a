"""KSM++ on the patched kernel: KUnit suites, pyksm's wire format and writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_every_present_page_of_a_hint_is_visited_once_in_order(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """One page table walk collects a batch of a hint's pages for the next
    hint steps; ksm_do_scan() puts what it did not visit and the hint goes
    on from there.  With 3 hint steps a call against batches of 16, and
    holes in the range, the hinted visits are still exactly the present
    pages, each once, in address order."""
    out = tmp_path / "batch.json"
    result = boot([python, str(GUEST / "hint_batch.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    assert r["available"] and r["lost"] == 0
    assert r["scanned"] == r["present"] == 73, r
    assert r["in_order"], r["visited"]


@pytest.mark.parametrize("stale", ["unstable", "hint"])
def test_hinted_pair_merges_past_stale_tree_nodes(
    boot: Boot, python: str, tmp_path: Path, stale: str
) -> None:
    """Hinted pages keep a tree of their own: a hinted page finds its hinted
    partner even after every other node of the unstable tree went stale
    (rewritten since its insertion), which would send its search astray.
    With stale=hint, the stale nodes are hinted pages in the hint tree
    itself: sorted by the checksum each page went in with, the hint tree
    does not send a search astray either (a tree sorted by contents did)."""
    out = tmp_path / "tree.json"
    result = boot([python, str(GUEST / "hint_tree.py"), str(out), stale])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    attempts = json.loads(out.read_text())["attempts"]
    last = attempts[-1]
    summarize(f"hint tree, stale {stale} nodes: {attempts}")
    assert last["same_round"], f"every attempt straddled two rounds: {attempts}"
    assert last["merged"] == 1, f"the second hinted page did not merge: {attempts}"
    assert last["merging"] == 2


def test_a_linear_page_finds_its_hinted_twin_within_the_round(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """A linear visit searches the hint tree when a hinted page with its
    checksum went in this round (the kernel's per-round filter of those
    checksums must never hide one): a page of the linear scan (B) merges
    with a twin (A) that a hint put in the hint tree earlier in the same
    round. On a series whose linear visits searched only the unstable
    tree, the pair waited for the next round."""
    out = tmp_path / "linear.json"
    result = boot([python, str(GUEST / "linear_finds_hinted.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    attempts = json.loads(out.read_text())["attempts"]
    last = attempts[-1]
    summarize(f"linear page, hinted twin: {attempts}")
    assert last["same_round"] and last["hinted_before_b"], f"no clean attempt: {attempts}"
    assert last["merging"] == 2, f"B did not merge with hinted A within the round: {attempts}"


def test_index_and_intake_survive_allocation_failures(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """failslab on ksmd (30 % of its allocations, sleeping ones included)
    while pages are freed and faulted back at the same addresses under hints:
    the per-mm index fails to insert and to erase. The index may lose
    entries but must never point at a freed rmap_item, and the linear scan
    must never stall. (The intakes' own allocations: the next test.)"""
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


def test_every_allocation_of_the_series_fails_once(boot: Boot, python: str, tmp_path: Path) -> None:
    """Each allocation the hints series adds fails exactly once (failslab /
    fail_page_alloc: probability 100, times 1, ``space`` past the syscall's
    own earlier allocations, task-filter with make-it-fail on the one
    allocating task). An intake or sysfs store reports ENOMEM and queues,
    drops or changes nothing; a failed ksmd allocation skips a page or drops
    the index; the next attempt without a fault works. ``times`` reaching 0
    and the stack that verbose=2 dumps show the failure hit that site."""
    out = tmp_path / "alloc.json"
    result = boot([python, str(GUEST / "alloc_faults.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    summarize(
        "alloc faults: "
        + ", ".join(f"{n}={r[n]['result']}" for n in ("open", "text_write", "raw_write"))
        + f", hint_capacity={ {n: c['result'] for n, c in r['hint_capacity'].items()} }"
    )
    nothing = {"hints_received": 0, "hints_invalid": 0, "hints_pending": 0}
    one_queued = {**nothing, "hints_received": 1, "hints_pending": 1}

    def failed_at(case: dict, function: str, **injected: int) -> None:
        assert case["injected"] == (injected or {"failslab": 1}), case
        assert function in case["stack"], f"the failure was not in {function}: {case}"

    # ksm_hints_open(): ENOMEM; the next open works.
    failed_at(r["open"], "ksm_hints_open")
    assert r["open"]["result"] == "ENOMEM"
    assert r["open"]["after"] == {**one_queued, "hints_dropped_flush": 0}
    # ksm_hints_write() / ksm_hints_raw_write(): ENOMEM, nothing queued or
    # counted; the retry queues the hint (for text, the line whose start an
    # earlier write carried over).
    for name, fn, size in (
        ("text_write", "ksm_hints_write", 6),
        ("raw_write", "ksm_hints_raw_write", 24),
    ):
        case = r[name]
        failed_at(case, fn)
        assert case["result"] == "ENOMEM"
        assert case["during"] == {**nothing, "hints_dropped_flush": 0}
        assert case["retry"] == size
        assert case["after"] == {**one_queued, "hints_dropped_flush": 0}
    # ksm_hints_release(): close() succeeds; the carried-over line is lost and
    # counted in hints_invalid (the same close without a fault queues it).
    rel = r["release"]
    failed_at(rel, "ksm_hints_release")
    assert rel["result"] is None
    assert rel["after"] == {**nothing, "hints_invalid": 1, "hints_dropped_flush": 0}
    assert rel["control"] == {**one_queued, "hints_dropped_flush": 0}
    # hint_capacity: a failed kvcalloc() leaves the stack unchanged (capacity,
    # queued hints, hints_dropped_flush); the retry resizes and flushes.
    flushed = {**nothing, "hints_pending": -3, "hints_dropped_flush": 3}
    unchanged = {**nothing, "hints_dropped_flush": 0}
    cap = r["hint_capacity"]
    failed_at(cap["kmalloc"], "ksm_hint_stack_resize")
    failed_at(cap["kmalloc_vmalloc"], "__get_vm_area_node", failslab=1, fail_page_alloc=1)
    assert "ksm_hint_stack_resize" in cap["kmalloc_vmalloc"]["stack"]
    for name, value in (("kmalloc", 64), ("kmalloc_vmalloc", 8192)):
        case = cap[name]
        assert case["result"] == "ENOMEM", case
        assert case["capacity"] == 4096 and case["during"] == unchanged, case
        assert case["capacity_after_retry"] == value and case["after"] == flushed, case
    # Only kmalloc's order-7 pages failed: vmalloc took over, the resize worked.
    fb = cap["fallback"]
    assert fb["injected"] == {"fail_page_alloc": 1}, fb
    assert fb["result"] == 4 and fb["capacity"] == 8192 and fb["during"] == flushed, fb
    # merge_across_nodes: the kcalloc() of the tree roots fails, the value stays.
    man = r["merge_across_nodes"]
    failed_at(man, "merge_across_nodes_store")
    assert man["result"] == "ENOMEM" and man["value"] == 1
    assert man["retry"] == 1 and man["value_after_retry"] == 0
    # ksmd's alloc_rmap_item() for a hinted page (__GFP_NOWARN: no stack): the
    # hint is used up without a visit; the next hint visits and merges the page.
    last = r["hint_rmap_item"][-1]
    assert last["injected"] == 1 and last["consumed"], r["hint_rmap_item"]
    assert last["scanned"] == 0, f"the linear scan took the failure: {r['hint_rmap_item']}"
    assert last["merged_after"] and last["scanned_after"] >= 1
    # ksmd's rmap_index_erase(): both attempts of one erase fail (GFP_NOWAIT,
    # then GFP_KERNEL, whose stack is dumped); the index is dropped, rounds go
    # on, re-faulted pages merge when hinted, and no page changed.
    er = r["index_erase"]
    assert er["injected"] == 2 and er["passed"], er
    assert "mas_store_gfp" in er["stack"] and "free_rmap_item" in er["stack"], er
    assert er["merged_after"] and er["rounds_after"], er
    assert er["wrong_pages"] == 0

"""Classifying hinted visits against the guests' ledgers (--trace-hints)."""

from __future__ import annotations

import numpy as np

from pyksm.experiment.hintpairs import LedgerHistory, Visit, classify, parse_trace

A, B = 0x10000, 0x100000  # guest RAM starts
RAMS = [(A, 4 << 12), (B, 4 << 12)]
X, Y = 1001, 1002


def history(states: list[tuple[float, int, list[int], list[int]]]) -> LedgerHistory:
    h = LedgerHistory()
    for t, rnd, g0, g1 in states:
        h.record(t, rnd, [np.array(g0, dtype=np.int64), np.array(g1, dtype=np.int64)])
    return h


def test_a_visit_that_misses_a_partner_visited_before_is_a_miss() -> None:
    h = history(
        [
            (0.0, 5, [1, 2, 3, 4], [11, 12, 13, 14]),
            (1.0, 5, [X, 2, 3, 4], [11, 12, 13, 14]),  # guest 0 reads X into frame 0
            (2.0, 5, [X, 2, 3, 4], [11, 12, X, 14]),  # guest 1 reads X into frame 2
            (3.0, 5, [Y, 2, 3, 4], [11, 12, X, X]),  # frame 0 now Y; guest 1 X again
            (4.0, 6, [Y, 2, 3, 4], [11, 12, X, X]),  # a new scan round
        ]
    )
    visits = [
        Visit(0.5, A, "unstable"),  # first copy of X
        Visit(1.5, B + 2 * 4096, "unstable"),  # partner visited at 0.5, still X: a miss
        Visit(1.6, B + 2 * 4096, "pair"),
        Visit(2.5, B + 3 * 4096, "unstable"),  # guest 0's X is gone: first
        Visit(2.6, A + 1 * 4096, "volatile"),
        Visit(2.7, A + 2 * 4096, "failed"),
        Visit(3.5, B, "unstable"),  # the round ended within the sample
        Visit(9.0, B, "unstable"),  # after the last sample
        Visit(1.2, 0x900000, "pair"),  # not guest RAM
    ]
    got = classify(h, visits, RAMS)
    assert got == {"first": 2, "missed": 1, "merged": 1, "failed": 1, "other": 4}


def test_a_partner_from_an_earlier_round_does_not_count() -> None:
    h = history(
        [
            (0.0, 1, [1, 2, 3, 4], [11, 12, 13, 14]),
            (1.0, 1, [X, 2, 3, 4], [11, 12, 13, 14]),
            (2.0, 2, [X, 2, 3, 4], [11, 12, 13, 14]),
            (3.0, 2, [X, 2, 3, 4], [X, 12, 13, 14]),
        ]
    )
    got = classify(h, [Visit(0.5, A, "unstable"), Visit(2.5, B, "unstable")], RAMS)
    assert got == {"first": 2}


def test_parse_trace_reads_visits_and_lost_events() -> None:
    text = (
        "# tracer: nop\n"
        "# entries-in-buffer/entries-written: 2/5   #P:2\n"
        "            ksmd-37      [001] .....   123.456789: ksm_hint_page: "
        "mm 00000000c0ffee00 addr 0x7f0012345000 result pair\n"
        "            ksmd-37      [000] d....   124.000001: ksm_hint_page: "
        "mm 00000000c0ffee00 addr 0x7f0012346000 result unstable\n"
    )
    visits, lost = parse_trace(text)
    assert visits == [
        Visit(123.456789, 0x7F0012345000, "pair"),
        Visit(124.000001, 0x7F0012346000, "unstable"),
    ]
    assert lost == 3


def test_parse_trace_reads_the_failure_cause() -> None:
    text = (
        "            ksmd-37      [001] .....   123.456789: ksm_hint_page: "
        "mm 00000000c0ffee00 addr 0x7f0012345000 result failed cause lru\n"
        "            ksmd-37      [000] d....   124.000001: ksm_hint_page: "
        "mm 00000000c0ffee00 addr 0x7f0012346000 result pair cause -\n"
    )
    visits, _ = parse_trace(text)
    assert visits == [
        Visit(123.456789, 0x7F0012345000, "failed", "lru"),
        Visit(124.000001, 0x7F0012346000, "pair"),
    ]

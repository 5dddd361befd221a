from __future__ import annotations

from pyksm.lab import ktap

LOG = """\
[    1.100000] KTAP version 1
[    1.100001] 1..2
[    1.100002]     KTAP version 1
[    1.100003]     # Subtest: ksm_hints
[    1.100004]     # module: ksm_hints_test
[    1.100005]     1..3
[    1.100006]     ok 1 push_pop_lifo
[    1.100007]     not ok 2 overflow_drops_oldest
[    1.100008]     ok 3 expiry # SKIP no clock
[    1.100009] not ok 1 ksm_hints
[    1.200000]     KTAP version 1
[    1.200001]     # Subtest: ksm_hints_parser
[    1.200002]     1..1
[    1.200003]     ok 1 text_line
[    1.200004] ok 2 ksm_hints_parser
[    1.300000]     KTAP version 1
[    1.300001]     # Subtest: crashed_suite
[    1.300002]     ok 1 first_case
"""


def test_suites_cases_and_verdicts() -> None:
    suites = ktap.parse(LOG)
    assert set(suites) == {"ksm_hints", "ksm_hints_parser", "crashed_suite"}
    h = suites["ksm_hints"]
    assert h.ok is False
    assert h.passed == ["push_pop_lifo"]
    assert h.failed == ["overflow_drops_oldest"]
    assert h.skipped == ["expiry"]
    assert suites["ksm_hints_parser"].ok is True
    assert suites["ksm_hints_parser"].passed == ["text_line"]
    # A suite whose result line never came is neither ok nor failed: unknown.
    assert suites["crashed_suite"].ok is None


def test_kselftest_tap_counts_use_the_same_result_lines() -> None:
    from pyksm.lab.selftests import tap_counts

    out = "\n".join(
        [
            "TAP version 13",
            "1..5",
            "ok 1 - merge",
            "ok 2 unmerge",
            "not ok 3 - zero pages",
            "ok 4 - numa # SKIP one node",
            "    ok 1 nested lines are not counted",
            "ok 5",
        ]
    )
    assert tap_counts(out) == (3, 1, 1)

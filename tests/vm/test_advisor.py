"""The scan-time advisor on the patched kernel: its first scan after it is
switched on is charged with ksmd's cpu time during that scan."""

from __future__ import annotations

import json
from pathlib import Path

from tests.vm.conftest import Boot, summarize

GUEST = Path(__file__).parent / "guest"


def test_advisor_charges_its_first_scan_only_with_that_scan(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """6.12's advisor zeroed its saved ksmd cpu time when switched on, so its
    first scan was charged with all ksmd had run since boot (cpu percent far
    above 100 once ksmd had run for seconds, and pages_to_scan cut to a few
    pages a batch), and a scan already running when it was switched on was
    timed from 0 (scan time = uptime). With patch 18, ksmd's cpu time and
    the start time are taken when a scan starts, and a scan that started
    before the switch is not measured."""
    out = tmp_path / "advisor.json"
    result = boot([python, str(GUEST / "advisor_first_scan.py"), str(out)])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    trials = json.loads(out.read_text())["trials"]
    for t in trials:
        f = t["first"]
        summarize(
            f"advisor switched on {'at a scan start' if t['at_start'] else 'mid-scan'} "
            f"after {t['runtime_before_s']:.1f} s of ksmd: first scan {f['scan_time_s']} s, "
            f"{f['cpu_percent']} % cpu, pages_to_scan {f['pages_to_scan']}"
        )
        # The precondition that made the old accounting fail: ksmd ran for
        # seconds before, and the scan itself lasted under a second.
        assert t["runtime_before_s"] >= 3.0, t
        # One thread cannot use more than all of one CPU during a scan.
        assert f["cpu_percent"] <= 100, t
        # The scan is timed from its own start, not from 0 (boot).
        assert f["scan_time_s"] < t["uptime_s"] / 2, t

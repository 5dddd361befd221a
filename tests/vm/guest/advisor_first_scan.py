"""Guest side of test_advisor.py: what the scan-time advisor charges its
first scan after it is switched on.

Three trials, each after ksmd has run flat out for a while, so that its
runtime since boot is several seconds:
- "at start" (twice): run=2 puts the scan cursor at the start of the list,
  the advisor is switched on, then run=1, so the advisor sees the scan start;
- "mid-scan": the advisor is switched on while ksmd is inside a scan.
For each, the first ksm:ksm_advisor event (scan time in s, the new
pages_to_scan, the cpu percent the advisor computed) and ksmd's runtime
(schedstat) when the advisor was switched on and during the trial.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from mergeable import PAGE, Region  # the script's own directory is on sys.path

from pyksm.deadline import wait_for
from pyksm.kernel import ksm
from pyksm.probes import features

SLOW = float(os.environ.get("PYKSM_TEST_SLOW", "1"))
EVENT = re.compile(r"ksm scan time (\d+) pages_to_scan (\d+) cpu percent (\d+)")
BURN_S = 3.0  # ksmd runtime to pile up before each trial (the old code charged it all)

k = ksm.Ksm()
tracefs = features.tracefs() or Path("/sys/kernel/tracing")
enable = tracefs / "events/ksm/ksm_advisor/enable"


def events() -> list[dict[str, int]]:
    out = []
    for m in EVENT.finditer((tracefs / "trace").read_text(errors="replace")):
        out.append({"scan_time_s": int(m[1]), "pages_to_scan": int(m[2]), "cpu_percent": int(m[3])})
    return out


def burn() -> None:
    """ksmd flat out (advisor off) until its runtime grew by BURN_S."""
    k.write("advisor_mode", "none")
    k.write("sleep_millisecs", 0)
    k.write("pages_to_scan", 4000)
    r0 = ksm.ksmd_runtime_ns()
    k.write("run", 1)
    wait_for(
        lambda: ksm.ksmd_runtime_ns() - r0 >= BURN_S * 1e9,
        120 * SLOW,
        f"ksmd running {BURN_S} s",
        poll=0.1,
    )


def trial(at_start: bool) -> dict[str, object]:
    burn()
    if at_start:
        k.unmerge(then=2)  # stops ksmd with its cursor at the start of the list
    else:
        k.write("pages_to_scan", 100)
        k.write("sleep_millisecs", 20)
        time.sleep(0.37)  # inside a scan of 4 MiB at 100 pages a batch (>= 10 batches)
    (tracefs / "trace").write_text("")
    enable.write_text("1")
    k.write("sleep_millisecs", 20)
    before = ksm.ksmd_runtime_ns()
    scans = k.read_int("full_scans")
    k.write("advisor_mode", "scan-time")
    if at_start:
        k.write("run", 1)
    try:
        wait_for(lambda: len(events()) >= 1, 120 * SLOW, "a ksm_advisor event", poll=0.05)
    finally:
        enable.write_text("0")
        k.write("run", 0)
    return {
        "at_start": at_start,
        "runtime_before_s": before / 1e9,
        "uptime_s": float(Path("/proc/uptime").read_text().split()[0]),
        "runtime_during_s": (ksm.ksmd_runtime_ns() - before) / 1e9,
        "full_scans_at_switch": scans,
        "first": events()[0],
    }


region = Region(1024)  # 4 MiB of distinct pages: a scan at 500 pages a batch is 3 batches
for i in range(1024):
    region.fill(i, (b"%08d" % i) * (PAGE // 8))
k.unmerge(then=0)
if k.has("smart_scan"):
    k.write("smart_scan", 0)
try:
    trials = [trial(True), trial(True), trial(False)]
finally:
    k.write("advisor_mode", "none")
Path(sys.argv[1]).write_text(json.dumps({"trials": trials}))

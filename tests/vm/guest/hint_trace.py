"""Guest side of test_hints.py's --trace-hints test: the ksm:ksm_hint_page
tracepoint through pyksm.experiment.hintpairs.HintTrace, on the real kernel."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from mergeable import PAGE, Region, hint_region_traced  # the script's own directory is on sys.path

from pyksm.deadline import wait_for
from pyksm.kernel import ksm

k = ksm.Ksm()
k.unmerge(then=2)
k.write("hint_capacity", 4096)
region = Region(32)
for i in range(32):
    region.fill(i, (b"%08d" % (i % 16)) * (PAGE // 8))  # pages i and i + 16 are equal

tracer, scanned0 = hint_region_traced(k, region)
out: dict[str, object] = {"available": tracer.available()}
k.write("pages_to_scan", 100)
k.write("run", 1)
wait_for(
    lambda: k.read_int("hint_pages_scanned") - scanned0 >= 32,
    60,
    "ksmd visiting the 32 hinted pages",
    poll=0.2,
)
k.write("run", 0)
visits, lost = tracer.stop()
out["scanned"] = k.read_int("hint_pages_scanned") - scanned0
out["visits"] = len(visits)
out["lost"] = lost
out["inside"] = sum(region.addr <= v.addr < region.addr + region.size for v in visits)
out["results"] = sorted({v.result for v in visits})
out["pairs"] = sum(v.result == "pair" for v in visits)
out["monotonic"] = [visits[0].t, time.monotonic()] if visits else []
Path(sys.argv[1]).write_text(json.dumps(out))

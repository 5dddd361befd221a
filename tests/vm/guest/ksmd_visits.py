"""Guest side of test_ksmd_visits.py: time ksmd's visits by kind with
pyksm.probes.ksmd_visits while hints bring ksmd to freshly written pages.

One mergeable region of distinct pages, two rounds so every checksum is
stable; then the timer is loaded and reset, a batch of pages is rewritten
and hinted, and the linear scan goes on for another round. The JSON out:
the costs by kind, and whether the kprobes were gone after stop()."""

from __future__ import annotations

import json
import mmap
import os
import sys
from dataclasses import asdict
from pathlib import Path

from mergeable import (  # the script's own directory is on sys.path
    PAGE,
    Region,
    ksm_for_hints,
    wait_counter,
)

from pyksm.kernel import hints, ksm, wire
from pyksm.probes import ksmd_visits

PAGES = 3000
HINTED = 200
k = ksm.Ksm()


def wait_until(counter: str, at_least: int, timeout: float = 300) -> int:
    return wait_counter(k, counter, at_least, 0.05, timeout)


def probes_listed() -> list[str]:
    listing = Path("/sys/kernel/debug/kprobes/list")
    if not listing.exists():
        return []
    return [
        line
        for line in listing.read_text().splitlines()
        if any(f in line for f in (*ksmd_visits.FUNCTIONS, ksmd_visits.WALK_FUNCTION))
    ]


ksm_for_hints(k, pages_to_scan=1000)
region = Region(PAGES)
region.map.madvise(mmap.MADV_NOHUGEPAGE)
for i in range(PAGES):
    region.fill(i, f"page {i:06d} ".encode().ljust(PAGE, b"."))
k.write("run", 1)
wait_until("full_scans", k.read_int("full_scans") + 3)
k.write("pages_to_scan", 100)

out: dict[str, object] = {"listed_before": probes_listed()}
timer = ksmd_visits.VisitTimer()
out["listed_while"] = probes_listed()
out["searches_timed"] = timer.searches_timed
timer.reset()
scanned0 = k.read_int("hint_pages_scanned")
first = PAGES // 2
with hints.HintWriter() as w:
    for i in range(first, first + HINTED):
        region.fill(i, f"rewritten {i:06d} ".encode().ljust(PAGE, b"-"))
    w.send([wire.Hint(os.getpid(), region.addr + first * PAGE, HINTED * PAGE)])
    wait_until("hint_pages_scanned", scanned0 + HINTED)
wait_until("full_scans", k.read_int("full_scans") + 2)
k.write("run", 0)  # ksmd between batches: no probed call in flight (see the runner)
costs = timer.stop()
timer.close()  # again: a no-op
out["listed_after"] = probes_listed()
out["costs"] = {kind: asdict(c) for kind, c in costs.items()}
out["hint_pages_scanned"] = k.read_int("hint_pages_scanned") - scanned0
Path(sys.argv[1]).write_text(json.dumps(out))

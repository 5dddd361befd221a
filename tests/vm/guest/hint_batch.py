"""Guest side of test_hints.py's batch test: ksmd visits every present page
of a hint exactly once, in address order, when one page table walk collects
a batch of pages for several hint steps and ksm_do_scan() returns with the
batch half used (6 pages a call: 3 hint steps against a batch of 16)."""

from __future__ import annotations

import json
import mmap
import os
import sys
import time
from pathlib import Path

from mergeable import PAGE, Region, hint_region_traced, ksm_for_hints, text_page, wait_counter

from pyksm.kernel import ksm

PAGES = 96
# Holes the walk must pass over: every 7th page and a run across a batch's end
HOLES = {i for i in range(PAGES) if i % 7 == 3} | set(range(40, 50))

k = ksm.Ksm()
ksm_for_hints(k, pages_to_scan=6)
region = Region(PAGES)
for i in range(PAGES):
    region.fill(i, text_page(f"batch page {i} of pid {os.getpid()} "))  # all unique
for i in sorted(HOLES):
    region.map.madvise(mmap.MADV_DONTNEED, i * PAGE, PAGE)
present = [region.addr + i * PAGE for i in range(PAGES) if i not in HOLES]

tracer, scanned0 = hint_region_traced(k, region)
out: dict[str, object] = {"available": tracer.available()}
k.write("run", 1)
wait_counter(k, "hint_pages_scanned", scanned0 + len(present), poll=0.05, timeout=60)
time.sleep(1)  # room for a visit too many to show up
k.write("run", 0)
visits, lost = tracer.stop()
out["lost"] = lost
out["scanned"] = k.read_int("hint_pages_scanned") - scanned0
out["present"] = len(present)
out["in_order"] = [v.addr for v in visits] == present
out["visited"] = [(v.addr - region.addr) // PAGE for v in visits]
Path(sys.argv[1]).write_text(json.dumps(out))

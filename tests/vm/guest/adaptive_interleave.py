"""Guest side of test_adaptive.py: the adaptive hint_interleave on the real knobs.

A small mergeable region (pairs of equal pages) is flooded with hints, its
pages hinted again and again, 4-page records topped up whenever fewer than
FLOOD_LOW are pending, so a backlog waits all along. The controller's
AdaptiveInterleave (pyksm.control.interleave) runs its law every 0.5 s on
the kernel's counters and writes hint_interleave. The flood lasts until the
linear scan has finished ROUNDS rounds under a raised knob (or FLOOD_MAX_S); then the backlog
drains and the knob must come back to the base, 1:1. The knob, hints_pending
and full_scans are sampled every 0.05 s.

The flood's rounds are counted from the first sample with the knob above
1:1: the claim is that the linear scan still ends rounds *while* the law
holds it raised. (Counted from the start, a fast host ended two rounds of
this 512-page region in 0.5 s, before the law's first period was over.)

usage: adaptive_interleave.py OUT.json
"""

from __future__ import annotations

import json
import mmap
import os
import sys
import time
from pathlib import Path

from mergeable import PAGE, Region, ksm_for_hints  # the script's own directory is on sys.path

from pyksm.control.interleave import AdaptiveInterleave
from pyksm.control.ratecap import read_backlog
from pyksm.kernel import hints, ksm, wire

PAIRS = 256  # the region: 512 pages, page i equal to page i + PAIRS
RECORD_PAGES = 4
FLOOD_LOW = 1000  # records pending below which the flood tops up
FLOOD_BATCH = 1000  # records per top-up
ROUNDS = 2  # linear rounds to finish under the flood
FLOOD_MAX_S = 240.0
DRAIN_MAX_S = 180.0
POLL = 0.05

k = ksm.Ksm()
ksm_for_hints(k)
k.write("hint_max_age_ms", 120000)

region = Region(2 * PAIRS)
region.map.madvise(mmap.MADV_NOHUGEPAGE)
for i in range(PAIRS):
    data = f"pair {i:06d} ".encode() * (PAGE // 12) + b"\0" * (PAGE % 12)
    region.fill(i, data)
    region.fill(PAIRS + i, data)

pid = os.getpid()
records = [
    wire.Hint(pid, region.addr + p * PAGE, RECORD_PAGES * PAGE)
    for p in range(0, 2 * PAIRS, RECORD_PAGES)
]
samples: list[dict[str, object]] = []
out: dict[str, object] = {"backlog_fields": sorted(read_backlog(k).__dict__)}
sent_records = sent_pages = 0
k.write("run", 1)
t0 = time.monotonic()
full0 = k.read_int("full_scans")
with hints.HintWriter() as w, AdaptiveInterleave(k, period_s=0.5) as adaptive:
    out["base"] = adaptive.original
    phase = "flood"
    flood_full = None
    raised_full: int | None = None  # full_scans when the knob was first seen above 1:1
    while True:
        now = time.monotonic()
        pending = k.read_int("hints_pending")
        full = k.read_int("full_scans")
        if phase == "flood" and pending < FLOOD_LOW:
            batch = [records[(sent_records + j) % len(records)] for j in range(FLOOD_BATCH)]
            w.send(batch)
            sent_records += len(batch)
            sent_pages += len(batch) * RECORD_PAGES
        adaptive.tick(now, sent_records, sent_pages)
        knob = k.read_raw("hint_interleave")
        samples.append(
            {
                "t": round(now - t0, 3),
                "phase": phase,
                "knob": knob,
                "pending": pending,
                "full_scans": full - full0,
            }
        )
        if phase == "flood" and raised_full is None and knob != "1:1":
            raised_full = full
            out["raised_s"] = round(now - t0, 3)
        raised_rounds = 0 if raised_full is None else full - raised_full
        if phase == "flood" and (raised_rounds >= ROUNDS or now - t0 > FLOOD_MAX_S):
            phase, flood_full = "drain", raised_rounds
            out["flood_s"] = round(now - t0, 3)
        elif phase == "drain":
            if pending == 0 and k.read_raw("hint_interleave") == "1:1":
                out["drained_s"] = round(now - t0, 3)
                break
            if now - t0 > FLOOD_MAX_S + DRAIN_MAX_S:
                break
        time.sleep(POLL)
    out["flood_full_scans"] = flood_full
    out["changes"] = adaptive.changes
    out["ticks_by_ratio"] = adaptive.ticks_by_ratio
    out["rejected"] = dict(w.rejected)
out["knob_after_exit"] = k.read_raw("hint_interleave")
out["full_scans"] = k.read_int("full_scans") - full0
out["sent_records"] = sent_records
out["hint_pages_scanned"] = k.read_int("hint_pages_scanned")
out["hints_dropped"] = {
    n: k.read_int(n) for n in ("hints_dropped_overflow", "hints_dropped_age", "hints_dropped_stale")
}
out["merging"] = int(Path("/proc/self/ksm_merging_pages").read_text())
out["samples"] = samples
k.write("run", 0)
Path(sys.argv[1]).write_text(json.dumps(out))

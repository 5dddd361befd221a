"""Guest side of test_hints.py's test that a page of the linear scan finds
its hinted twin in the hint tree within the round.

One mergeable region, in the linear scan's order: A (one page), F (a filler
of distinct pages), B (one page), T (a tail that keeps the round going).
B holds the pair's contents from the start, so its checksum is stable. In
a round, after the linear scan has passed A but before it reaches B, A is
given the pair's contents and hinted: the hinted visit finds nothing (B is
not in this round's unstable tree yet) and puts A in the hint tree. Then
the linear scan reaches B. If linear visits search the hint tree, B merges
with A there and then; if they search only the unstable tree, B goes into
it, and the pair merges only in the next round (A's visit there comes
before B's).

The JSON out, per attempt: whether A was hinted before the scan reached
B, whether the scan was still in the same round after B (otherwise the
script tries again), and the process's merging pages then."""

from __future__ import annotations

import json
import mmap
import os
import sys
from pathlib import Path

from mergeable import (  # the script's own directory is on sys.path
    PAGE,
    Region,
    ksm_for_hints,
    wait_counter,
)
from mergeable import text_page as page

from pyksm.kernel import hints, ksm, wire

N_FILL = 4000
N_TAIL = 20000
A, B = 0, 1 + N_FILL


def merging() -> int:
    return int(Path("/proc/self/ksm_merging_pages").read_text())


k = ksm.Ksm()
ksm_for_hints(k)  # smart scan off: it would skip B, whose page never changes
k.write("hint_skip_volatility", 1)

region = Region(1 + N_FILL + 1 + N_TAIL)
region.map.madvise(mmap.MADV_NOHUGEPAGE)  # a huge page would be split, not merged
for i in range(1 + N_FILL + 1 + N_TAIL):
    region.fill(i, page(f"F{i:07d}"))

out: dict[str, object] = {"attempts": []}
for attempt in range(3):
    pair = page(f"pair {attempt} ")
    region.fill(A, page(f"A{attempt:07d}"))
    region.fill(B, pair)
    # Two rounds give every page a stable checksum.
    k.write("pages_to_scan", 2000)
    k.write("run", 1)
    wait_counter(k, "full_scans", k.read_int("full_scans") + 3, poll=0.05)
    k.write("pages_to_scan", 100)
    # A round starts, and the linear scan gets past A but not near B.
    round_no = wait_counter(k, "full_scans", k.read_int("full_scans") + 1)
    start = k.read_int("pages_scanned")
    wait_counter(k, "pages_scanned", start + 200)
    hinted0 = k.read_int("hint_pages_scanned")
    region.fill(A, pair)
    with hints.HintWriter() as w:
        w.send([wire.Hint(os.getpid(), region.addr + A * PAGE, PAGE)])
        wait_counter(k, "hint_pages_scanned", hinted0 + 1)
    before_b = k.read_int("pages_scanned") - start < B
    # Now past B (and its hint step), still in the round unless it ended early.
    wait_counter(k, "pages_scanned", start + 2 * B)
    same_round = k.read_int("full_scans") == round_no
    out["attempts"].append(  # type: ignore[union-attr]
        {"hinted_before_b": before_b, "same_round": same_round, "merging": merging()}
    )
    if same_round and before_b:
        break
    k.unmerge()  # and try again
k.write("run", 0)
Path(sys.argv[1]).write_text(json.dumps(out))

"""Guest side of test_hints.py's hint tree tests: a hinted page finds its
hinted partner although the tree between them went stale.

One mergeable region, in the linear scan's order: S (stale: N distinct
pages), P1 and P2 (the pair), T (a tail that keeps the round going).
Within one round, after the linear scan has put S, P1 and P2 into the
unstable tree: P1 gets the pair's contents and is hinted; then every page
of S is rewritten (its nodes now sort by contents they no longer have);
then P2 gets the pair's contents and is hinted. A search for P2 through the
stale S nodes turns at random and misses P1; in a tree of hinted pages of
its own, P1 is found. The pair's contents sort in the middle of S's, so the
rewrite changes the turns.

With ``hint`` as the second argument, the stale nodes are in the hint tree
itself: S is rewritten and hinted (into the hint tree) before P1, then
rewritten again without hints. A hint tree sorted by contents would send
P2's search astray as the unstable tree does; one sorted by the checksum
each page went in with finds P1."""

from __future__ import annotations

import json
import mmap
import os
import random
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

N_STALE = 4096
N_TAIL = 20000
SPACING = 10**8 // N_STALE // 2 * 2  # even: S values never equal the pair's (odd)
STALE_IN_HINT_TREE = sys.argv[2:] == ["hint"]


def number(n: int) -> bytes:
    """A page of n's eight digits: pages sort as their numbers do."""
    return page(f"{n:08d}")


k = ksm.Ksm()


def wait_until(counter: str, at_least: int, poll: float = 0.005, timeout: float = 120) -> int:
    return wait_counter(k, counter, at_least, poll, timeout)


ksm_for_hints(k)  # smart scan off: it would skip S in the measured round
k.write("hint_skip_volatility", 1)

region = Region(N_STALE + 2 + N_TAIL)
# P1 and P2 in one huge page would not merge (KSM splits it instead)
region.map.madvise(mmap.MADV_NOHUGEPAGE)
p1, p2 = N_STALE, N_STALE + 1
stale_values = [i * SPACING for i in range(N_STALE)]
for i, v in enumerate(stale_values):
    region.fill(i, number(v))
region.fill(p1, number(11111111))
region.fill(p2, number(33333333))
for i in range(N_TAIL):
    region.fill(p2 + 1 + i, page(f"T{i:07d}"))

# Two rounds give every page a stable checksum, so the next round inserts them.
k.write("pages_to_scan", 2000)
full0 = k.read_int("full_scans")
k.write("run", 1)
wait_until("full_scans", full0 + 3, poll=0.05)
k.write("pages_to_scan", 100)

out: dict[str, object] = {"attempts": []}
rng = random.Random(7)
for attempt in range(3):
    # Wait for a round to start, then until the scan is past S, P1 and P2.
    round_no = wait_until("full_scans", k.read_int("full_scans") + 1)
    wait_until("pages_scanned", k.read_int("pages_scanned") + N_STALE + 2 + 500)
    scanned0 = k.read_int("hint_pages_scanned")
    merged0 = k.read_int("hint_pages_merged")
    pair = number(50000001 + 2 * attempt)
    with hints.HintWriter() as w:
        if STALE_IN_HINT_TREE:
            rng.shuffle(stale_values)
            for i, v in enumerate(stale_values):
                region.fill(i, number(v))
            w.send([wire.Hint(os.getpid(), region.addr, N_STALE * PAGE)])
            scanned0 = wait_until("hint_pages_scanned", scanned0 + N_STALE, poll=0.05)
        region.fill(p1, pair)
        w.send([wire.Hint(os.getpid(), region.addr + p1 * PAGE, PAGE)])
        wait_until("hint_pages_scanned", scanned0 + 1)
        rng.shuffle(stale_values)
        for i, v in enumerate(stale_values):
            region.fill(i, number(v))
        region.fill(p2, pair)
        w.send([wire.Hint(os.getpid(), region.addr + p2 * PAGE, PAGE)])
        wait_until("hint_pages_scanned", scanned0 + 2)
    same_round = k.read_int("full_scans") == round_no
    merged = k.read_int("hint_pages_merged") - merged0
    merging = int(Path("/proc/self/ksm_merging_pages").read_text())
    out["attempts"].append(  # type: ignore[union-attr]
        {"same_round": same_round, "merged": merged, "merging": merging}
    )
    if same_round:
        break
    # The round ended in between (a slow guest): unmerge and try again,
    # after a round that sees S's new contents twice (stable checksums).
    region.fill(p1, number(11111111))
    region.fill(p2, number(33333333))
    wait_until("full_scans", k.read_int("full_scans") + 1, poll=0.05)
k.write("run", 0)
Path(sys.argv[1]).write_text(json.dumps(out))

"""Guest side of test_hints.py's fault injection test: every allocation of
ksmd fails at random (failslab on ksmd's task, sleeping allocations
included) while pages come and go under hints, so rmap_items are freed and
linked again at the same addresses and the per-mm index fails to insert and
to erase. Afterwards the linear scan must still finish rounds, every page
must hold what was written, and hinted duplicates must still merge.

Writes a JSON summary to argv[1]; exits non-zero with a message when the
fault injection interface is missing."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import random
import sys
import time
from pathlib import Path

from mergeable import PAGE, Region  # the script's own directory is on sys.path

from pyksm.kernel import hints, ksm, wire

FAILSLAB = Path("/sys/kernel/debug/failslab")
PAGES = 4096
CHURN_S = float(os.environ.get("PYKSM_CHURN_S", "20"))
TIMES = 1_000_000
# The churn goes on past CHURN_S until failslab has failed this many of
# ksmd's allocations (the test wants more than 100), for at most 6 x
# CHURN_S: on a loaded host a debug kernel churned too few rounds in 20 s
# (91 failures), which tested too little rather than something wrong.
MIN_INJECTED = 150

k = ksm.Ksm()
hints.ensure_debugfs()
if not FAILSLAB.is_dir():
    sys.exit(f"index_faults: {FAILSLAB} missing (CONFIG_FAILSLAB, FAULT_INJECTION_DEBUG_FS)")


def wait_until(counter: str, at_least: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while (value := k.read_int(counter)) < at_least:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return value


def content(page: int, gen: int) -> bytes:
    return f"page {page:6d} generation {gen:6d} ".encode().ljust(PAGE, b".")


k.write("run", 2)
k.write("hint_capacity", 4096)
k.write("hint_interleave", "1:1")
k.write("pages_to_scan", 1000)
k.write("sleep_millisecs", 10)
region = Region(PAGES)
gens = [0] * PAGES
for i in range(PAGES):
    region.fill(i, content(i, 0))
k.write("run", 1)
scans0 = k.read_int("full_scans")
if wait_until("full_scans", scans0 + 2, 120) is None:
    sys.exit("index_faults: ksmd did not finish two rounds before the faults")

(FAILSLAB / "task-filter").write_text("Y")
(FAILSLAB / "ignore-gfp-wait").write_text("N")
(FAILSLAB / "verbose").write_text("0")
(FAILSLAB / "interval").write_text("1")


pid = ksm.ksmd_pid()
(FAILSLAB / "times").write_text(str(TIMES))
(FAILSLAB / "probability").write_text("30")
Path(f"/proc/{pid}/make-it-fail").write_text("1")

rng = random.Random(7)
writer = hints.HintWriter()
scans_faulty0 = k.read_int("full_scans")
t0 = time.monotonic()
rounds = 0
try:
    while True:
        elapsed = time.monotonic() - t0
        failed = TIMES - int((FAILSLAB / "times").read_text())
        if elapsed >= 6 * CHURN_S or (elapsed >= CHURN_S and failed >= MIN_INJECTED):
            break
        # A block goes away (its rmap_items are freed as the scan passes
        # it) and comes back with new contents at the same addresses.
        first = rng.randrange(0, PAGES - 64)
        start = region.addr + first * PAGE
        region.map.madvise(mmap.MADV_DONTNEED, first * PAGE, 64 * PAGE)
        time.sleep(0.05)
        for i in range(first, first + 64):
            gens[i] += 1
            region.fill(i, content(i, gens[i]))
        writer.send([wire.Hint(os.getpid(), start, 64 * PAGE)])
        rounds += 1
finally:
    Path(f"/proc/{pid}/make-it-fail").write_text("0")
    (FAILSLAB / "probability").write_text("0")
injected = TIMES - int((FAILSLAB / "times").read_text())
scans_faulty = k.read_int("full_scans") - scans_faulty0

# After the faults: the linear scan goes on finishing rounds.
scans1 = k.read_int("full_scans")
after = wait_until("full_scans", scans1 + 2, 120)

# Every page holds what was written last.
wrong = sum(
    1
    for i in range(PAGES)
    if hashlib.sha1(region.map[i * PAGE : (i + 1) * PAGE]).digest()
    != hashlib.sha1(content(i, gens[i])).digest()
)

# Hinted duplicates still merge.
merged0 = k.read_int("hint_pages_merged")
twin = content(0, 999_999)
region.fill(10, twin)
region.fill(PAGES - 10, twin)
writer.send(
    [
        wire.Hint(os.getpid(), region.addr + 10 * PAGE, PAGE),
        wire.Hint(os.getpid(), region.addr + (PAGES - 10) * PAGE, PAGE),
    ]
)
merged = wait_until("hint_pages_merged", merged0 + 1, 60)
writer.close()
k.write("run", 2)

Path(sys.argv[1]).write_text(
    json.dumps(
        {
            "churn_rounds": rounds,
            "injected": injected,
            "full_scans_during": scans_faulty,
            "full_scans_after": None if after is None else after - scans1,
            "wrong_pages": wrong,
            "merged_after": None if merged is None else merged - merged0,
            "hints_rejected": dict(writer.rejected),
        }
    )
)

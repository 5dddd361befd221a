"""Inside the test kernel: snapshots at 1 s while KSM merges two processes'
duplicate MADV_MERGEABLE memory (shaped like the efficacy benchmark: one process
of unique pages, two processes holding the same content as if read from one
file). Writes OUT.npz (the snapshot series, KSM counters per snapshot) and
OUT.json (knobs, timings); the host test analyses them.

One of the two "same" processes churns: every 2 s it rewrites 64 more pages
with copies of the unique process's pages, so opportunities also appear and
vanish while KSM runs.

With HINTS=1 (KSM++ kernel): hint_capacity=4096; when KSM starts, both
"same" processes hint their whole region (as the collector would after a
read), and the churning one hints every range it rewrites. Every hint sent is
logged to OUT.hints.jsonl (time = CLOCK_MONOTONIC seconds).

argv: OUT (path without suffix).
Env: UNIQUE_MIB, SAME_MIB, SNAPSHOTS, PAGES_TO_SCAN, HINTS.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from mergeable import PAGE, Region  # this directory is on sys.path (script dir)

from pyksm.analysis import snapshot, storage
from pyksm.kernel import hints, ksm, wire

UNIQUE_MIB = int(os.environ.get("UNIQUE_MIB", "8"))
SAME_MIB = int(os.environ.get("SAME_MIB", "8"))
SNAPSHOTS = int(os.environ.get("SNAPSHOTS", "25"))
PAGES_TO_SCAN = int(os.environ.get("PAGES_TO_SCAN", "25"))
CHURN_PAGES = 64  # the churning process rewrites this many pages every CHURN_S
CHURN_S = 2.0
UNIQUE_SEED = 7 << 40
HINTS = os.environ.get("HINTS", "0") == "1"
HINT_LOG: list[Path] = []
k = ksm.Ksm()


def send_hint(writer: hints.HintWriter, start: int, length: int) -> None:
    t = time.monotonic()
    if writer.send([wire.Hint(os.getpid(), start, length)]) != 1:
        raise RuntimeError(f"hint rejected: {dict(writer.rejected)}")
    line = json.dumps({"time": t, "pid": os.getpid(), "start": start, "len": length}) + "\n"
    fd = os.open(HINT_LOG[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)


def child(kind: str, ready: int) -> None:
    mib = UNIQUE_MIB if kind == "unique" else SAME_MIB
    pages = (mib << 20) // PAGE
    r = Region(pages)
    words = np.frombuffer(r.map, dtype=np.uint64).reshape(pages, PAGE // 8)
    # every page distinct within a process; "same" pages equal across the two
    seed = UNIQUE_SEED if kind == "unique" else 3 << 40
    words[:, 0] = np.arange(pages, dtype=np.uint64) + np.uint64(seed)
    words[:, 1:] = np.uint64(0x5A5A5A5A)
    os.write(ready, b"x")
    if kind == "unique":
        time.sleep(3600)
    os.read(ready_go, 1)  # the parent starts KSM and the snapshots
    writer = hints.HintWriter() if HINTS else None
    if writer:
        send_hint(writer, r.addr, r.size)
    if kind != "churn":
        time.sleep(3600)
    j = 0
    while True:
        time.sleep(CHURN_S)
        lo, hi = (j * CHURN_PAGES) % pages, (j * CHURN_PAGES) % pages + CHURN_PAGES
        words[lo:hi, 0] = np.arange(lo, hi, dtype=np.uint64) + np.uint64(UNIQUE_SEED)
        if writer:
            send_hint(writer, r.addr + lo * PAGE, (hi - lo) * PAGE)
        j += 1


go_r, go_w = os.pipe()
ready_go = go_r


def spawn(kind: str) -> int:
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        try:
            child(kind, wr)
        finally:
            os._exit(0)
    os.close(wr)
    assert os.read(rd, 1) == b"x"
    os.close(rd)
    return pid


def main() -> None:
    out = Path(sys.argv[1])
    HINT_LOG.append(out.with_suffix(".hints.jsonl"))
    HINT_LOG[0].unlink(missing_ok=True)
    k.unmerge(then=2)
    if k.has("hint_capacity"):
        k.write("hint_capacity", 4096 if HINTS else 0)
    elif HINTS:
        raise SystemExit("HINTS=1 needs the KSM++ kernel (no ksm/hint_capacity)")
    k.write("pages_to_scan", PAGES_TO_SCAN)
    k.write("sleep_millisecs", 20)
    knobs = {
        n: k.read(n)
        for n in (
            "pages_to_scan",
            "sleep_millisecs",
            "smart_scan",
            "max_page_sharing",
            "use_zero_pages",
            "merge_across_nodes",
            "hint_capacity",
            "hint_interleave",
            "hint_max_age_ms",
            "hint_skip_volatility",
        )
        if k.has(n)
    }
    pids = [spawn("unique"), spawn("same"), spawn("churn")]
    # warm the hash (JIT) before the clock starts
    snapshot.snapshot_once(pids[:1])
    run_at = time.monotonic()
    k.write("run", 1)
    os.write(go_w, b"gg")
    series = snapshot.capture(pids, interval=1.0, count=SNAPSHOTS)
    k.write("run", 2)
    for pid in pids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    series.meta["ksm_start"] = run_at - series.meta["t0_monotonic"]
    series.meta["knobs"] = knobs
    storage.save(series, out.with_suffix(".npz"))
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "knobs": knobs,
                "pids": pids,
                "ksm_start": series.meta["ksm_start"],
                "capture_seconds": series.meta["capture_seconds"],
                "ksm": series.ksm,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Inside the patched test kernel: failed hinted merges by cause on a small
hinted-read workload. Two processes read the same FILE_MIB MiB file into
MADV_MERGEABLE memory, 1 MiB a read, each read hinted right after it (as the
collector hints a guest's reads); ksmd at 100 pages / 20 ms, hint_interleave
1:1. Prints (and writes to argv[1]) the hinted visits, merges and the
hint_pages_failed_<cause> deltas once merging has settled.

usage (host): pyksm vm run -m 2G -o OUT -- python benchmarks/guest/failed_merges.py OUT/x.json
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import sys
import time
from pathlib import Path

from pyksm.kernel import hints, ksm, wire

FILE_MIB = int(os.environ.get("FILE_MIB", "64"))
WAIT_S = float(os.environ.get("WAIT", "150"))
CHUNK = 1 << 20
COUNTERS = ("hint_pages_scanned", "hint_pages_merged", "hints_received", "full_scans")


def reader(data: Path, done_fd: int) -> None:
    m = mmap.mmap(-1, FILE_MIB << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_MERGEABLE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    view = memoryview(m)
    with hints.HintWriter() as w, data.open("rb", buffering=0) as f:
        off = 0
        while off < len(m):
            n = f.readinto(view[off : off + CHUNK]) or 0
            if not n:
                break
            w.send([wire.Hint(os.getpid(), addr + off, n)])
            off += n
            time.sleep(0.05)
    os.write(done_fd, b"d")
    time.sleep(3600)


def main() -> None:
    k = ksm.Ksm()
    k.unmerge(then=0)
    for name, value in (
        ("hint_capacity", 4096),
        ("pages_to_scan", 100),
        ("sleep_millisecs", 20),
        ("hint_interleave", "1:1"),
    ):
        k.write(name, value)
    data = Path("/tmp/failed-merges-data.bin")
    data.write_bytes(os.urandom(FILE_MIB << 20))
    before = k.merge_failures()
    c0 = {n: k.read_int(n) for n in COUNTERS}
    k.write("run", 1)
    r, w = os.pipe()
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            reader(data, w)
            os._exit(0)
        pids.append(pid)
    t0 = time.monotonic()
    done = b""
    while done.count(b"d") < 2:
        done += os.read(r, 8)
    t_read = time.monotonic() - t0
    last, still = -1, 0
    while time.monotonic() - t0 < WAIT_S and still < 3:
        time.sleep(5)
        cur = k.read_int("hint_pages_merged")
        still = still + 1 if cur == last and k.read_int("hints_pending") == 0 else 0
        last = cur
    after = k.merge_failures()
    out = {
        "file_mib": FILE_MIB,
        "read_s": round(t_read, 1),
        "elapsed_s": round(time.monotonic() - t0, 1),
        **{n: k.read_int(n) - c0[n] for n in COUNTERS},
        "failed": (after - before).as_dict() if after and before else None,
        "pages_sharing": k.read_int("pages_sharing"),
    }
    for pid in pids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    k.write("run", 2)
    print(json.dumps(out))
    Path(sys.argv[1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()

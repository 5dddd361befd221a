"""Guest side of test_hint_fuzz.py: ≥ 100 000 random and malformed writes to
ksm/hints_raw and ksm/hints, including targets that exit while written.

Every write either succeeds (counted in hints_received, per record) or fails
(counted in hints_invalid, one per failed write). Prints a JSON summary.
"""

from __future__ import annotations

import errno
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

from mergeable import PAGE, Region

from pyksm.kernel import hints, ksm, wire

SEED = int(os.environ.get("FUZZ_SEED", "1234"))
N = int(os.environ.get("FUZZ_WRITES", "100000"))
rng = random.Random(SEED)
k = ksm.Ksm()
hints.ensure_debugfs()
raw = os.open(hints.HINTS_RAW, os.O_WRONLY)
text = os.open(hints.HINTS_TEXT, os.O_WRONLY)
me = os.getpid()
region = Region(256)
for i in range(256):
    region.fill(i, bytes([i & 0xFF]) * PAGE)

stats: Counter[str] = Counter()
accepted_records = 0
rejected_writes = 0
wrong_errno: list[str] = []


def write(fd: int, data: bytes, records: int, expect: int | None = None, case: str = "") -> None:
    """expect: None = anything; 0 = must succeed; errno = must fail with it."""
    global accepted_records, rejected_writes
    try:
        os.write(fd, data)
    except OSError as e:
        rejected_writes += 1
        stats[f"{case}:{hints.errno_name(e.errno or 0)}"] += 1
        if expect is not None and e.errno != expect:
            wrong_errno.append(f"{case}: got {hints.errno_name(e.errno or 0)}")
        return
    accepted_records += records
    stats[f"{case}:ok"] += 1
    if expect:
        wrong_errno.append(f"{case}: accepted, expected {errno.errorcode[expect]}")


def rec(pid: int, start: int, length: int, flags: int = 0) -> bytes:
    return wire.RECORD.pack(pid, flags, start, length)


gone = os.fork()
if gone == 0:
    os._exit(0)
os.waitpid(gone, 0)  # a pid that no longer exists
task_size = 1 << 47
inv0, rec0 = k.read_int("hints_invalid"), k.read_int("hints_received")
t0 = time.monotonic()

structured = [
    ("zero-len", lambda: rec(me, region.addr, 0), errno.EINVAL),
    ("flags", lambda: rec(me, region.addr, PAGE, flags=rng.randrange(1, 1 << 32)), errno.EINVAL),
    ("pid<1", lambda: rec(-rng.randrange(0, 1 << 31), region.addr, PAGE), errno.EINVAL),
    ("wrap", lambda: rec(me, (1 << 64) - PAGE * rng.randrange(1, 9), PAGE * 16), errno.EINVAL),
    ("huge", lambda: rec(me, region.addr, (64 << 20) + rng.randrange(1, 1 << 40)), errno.E2BIG),
    ("beyond-task", lambda: rec(me, task_size + PAGE * rng.randrange(0, 1000), PAGE), errno.ERANGE),
    ("exited-pid", lambda: rec(gone, region.addr, PAGE), errno.ESRCH),
    ("not-ksm", lambda: rec(1, 0x400000, PAGE), errno.EOPNOTSUPP),
]

writes = 0
quarter = N // 4
# 1. Random bytes into hints_raw: odd sizes and multiples of 24 alike.
for _ in range(quarter):
    size = rng.choice([rng.randrange(1, 200), 24 * rng.randrange(1, 8)])
    write(raw, rng.randbytes(size), size // 24, case="raw-random")
    writes += 1
# 2. Random and malformed text into hints.
alphabet = "0123456789abcdefx -+\t\n"
for _ in range(quarter):
    if rng.random() < 0.5:
        data = rng.randbytes(rng.randrange(1, 120))
    else:
        data = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80))).encode()
    write(text, data, 0, case="text-random")
    writes += 1
# 3. One malformed record per write (raw) or line (text), with the errno expected.
for i in range(quarter):
    name, make, expect = structured[i % len(structured)]
    r = make()
    if i % 2:
        write(raw, r, 1, expect, case=f"raw-{name}")
    else:
        pid, flags, start, length = wire.RECORD.unpack(r)
        if flags:
            continue  # the text format has no flags field
        write(text, f"{pid} {start} {length}\n".encode(), 1, expect, case=f"text-{name}")
    writes += 1
# 4. Targets exiting while written: children with mergeable memory exit at
#    random moments while hints for them are flooding in.
while writes < N:
    rd, wr = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(rd)
        r = Region(16)
        os.write(wr, r.addr.to_bytes(8, "little"))
        time.sleep(rng.random() * 0.01)
        os._exit(0)
    os.close(wr)
    addr = int.from_bytes(os.read(rd, 8), "little")
    os.close(rd)
    reaped = False
    for j in range(rng.randrange(20, 200)):
        batch = rec(child, addr + PAGE * (j % 16), PAGE) * rng.randrange(1, 5)
        write(raw, batch, len(batch) // 24, case="exiting")
        writes += 1
        if not reaped and os.waitpid(child, os.WNOHANG)[0]:
            reaped = True
    if not reaped:
        os.waitpid(child, 0)

elapsed = time.monotonic() - t0
# The text-random phase cannot know how many records a lucky line held.
text_ok = sum(v for key, v in stats.items() if key == "text-random:ok")
summary = {
    "writes": writes,
    "seconds": round(elapsed, 1),
    "rejected_writes": rejected_writes,
    "invalid_delta": k.read_int("hints_invalid") - inv0,
    "accepted_records_known": accepted_records,
    "text_random_accepted_writes": text_ok,
    "received_delta": k.read_int("hints_received") - rec0,
    "wrong_errno": wrong_errno[:20],
    "wrong_errno_count": len(wrong_errno),
    "cases": dict(sorted(stats.items())),
    "pending": k.read_int("hints_pending"),
}
Path(sys.argv[1]).write_text(json.dumps(summary, indent=1))

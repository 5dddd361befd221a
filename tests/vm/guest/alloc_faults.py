"""Guest side of test_hints.py's one-failure-per-site test: every allocation
the KSM hints series adds fails exactly once, and the documented behaviour
follows.

Each case arms failslab and/or fail_page_alloc for one failure
(probability 100, interval 1, times 1, task-filter Y, verbose 2), sets
make-it-fail on the one task that allocates (this process for the intakes
and sysfs stores, ksmd for its index and rmap_items), runs one syscall or
waits for one ksmd step, and disarms. ``space`` skips the allocations that
the syscall makes before the one under test (a sysfs write's kernfs buffer,
open()'s name and struct file). That the failure was injected, and where, is
checked two ways: ``times`` went from its armed value to 0 while only that
task could fail; the stack that verbose=2 dumps to the kernel log names the
allocating function (allocations with __GFP_NOWARN dump nothing: there the
counters tell, e.g. a hinted page that was not scanned).

Writes a JSON summary to argv[1]; exits non-zero with a message when the
fault injection interface is missing.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mergeable import PAGE, Region  # the script's own directory is on sys.path

from pyksm.kernel import hints, ksm, wire

DEBUGFS = Path("/sys/kernel/debug")
FAILSLAB = DEBUGFS / "failslab"
FAIL_PAGE = DEBUGFS / "fail_page_alloc"
KSM_SYSFS = Path("/sys/kernel/mm/ksm")
HINT_SIZE = 40  # sizeof(struct ksm_hint)
# A sysfs write of up to 7 bytes first kmallocs its len + 1 byte copy (kmalloc-8,
# kernfs_fop_write_iter): a space of 9 lets that one through and fails the next.
SYSFS_SPACE = 9
# open() first takes a PATH_MAX name (names_cache, 4096) and then small objects
# (struct file, debugfs's proxy fops) before ksm_hints_open()'s ~2.4 KiB
# kmalloc-4k: 4096 + 2048 lets the name and the small ones through.
OPEN_SPACE = 4096 + 2048

k = ksm.Ksm()
hints.ensure_debugfs()
for d in (FAILSLAB, FAIL_PAGE):
    if not d.is_dir():
        sys.exit(
            f"alloc_faults: {d} missing (CONFIG_FAILSLAB, FAIL_PAGE_ALLOC, FAULT_INJECTION_DEBUG_FS)"
        )


def put(path: Path, value: object) -> None:
    path.write_text(str(value))


def times(attr: Path) -> int:
    return int((attr / "times").read_text())


def arm(attr: Path, n: int = 1, space: int = 0, min_order: int | None = None) -> None:
    """``n`` failures of ``attr`` for tasks with make-it-fail, after ``space``."""
    put(attr / "task-filter", "Y")
    put(attr / "ignore-gfp-wait", "N")
    put(attr / "interval", 1)
    put(attr / "verbose", 2)
    put(attr / "space", space)
    put(attr / "times", n)
    if min_order is not None:
        put(attr / "min-order", min_order)
    put(attr / "probability", 100)


def disarm(attr: Path) -> None:
    put(attr / "probability", 0)
    put(attr / "space", 0)
    if attr == FAIL_PAGE:
        put(attr / "min-order", 1)


class Kmsg:
    """The kernel log from now on (fault injection's verbose stack dumps)."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read(self) -> list[str]:
        lines = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                return lines
            except OSError as e:
                if e.errno == errno.EPIPE:  # overwritten records: go on
                    continue
                raise
            lines.append(rec.decode(errors="replace").split(";", 1)[-1].split("\n", 1)[0])


def errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


# --- injection around one syscall of this process ---------------------------
mif = os.open("/proc/self/make-it-fail", os.O_WRONLY)
kmsg = Kmsg()


def inject(
    action: Callable[[], object],
    slab: dict[str, int] | None = None,
    page: dict[str, int] | None = None,
) -> dict[str, object]:
    """Run ``action`` with the given failslab / fail_page_alloc arming; return
    its result (or errno name), how many failures each attr injected, and the
    kernel functions named in the dumped stacks."""
    kmsg.read()
    armed = [(FAILSLAB, slab), (FAIL_PAGE, page)]
    for attr, knobs in armed:
        if knobs is not None:
            arm(attr, **knobs)
    os.write(mif, b"1")
    try:
        result: object = action()
    except OSError as e:
        result = errname(e)
    finally:
        os.write(mif, b"0")
        for attr, knobs in armed:
            if knobs is not None:
                disarm(attr)
    injected = {
        attr.name: knobs.get("n", 1) - times(attr) for attr, knobs in armed if knobs is not None
    }
    log = kmsg.read()
    return {"result": result, "injected": injected, "stack": stack_functions(log)}


def stack_functions(log: list[str]) -> list[str]:
    """Function names of the call traces dumped after a forced failure."""
    out: list[str] = []
    forced = False
    for line in log:
        if "FAULT_INJECTION: forcing a failure" in line:
            forced = True
            out.append("--")
        elif forced and "+0x" in line:
            out.append(line.strip().split("+0x", 1)[0].lstrip("? ").split()[-1])
    return out


def counters() -> dict[str, int]:
    return {
        n: k.read_int(n)
        for n in ("hints_received", "hints_invalid", "hints_pending", "hints_dropped_flush")
    }


def delta(before: dict[str, int]) -> dict[str, int]:
    now = counters()
    return {n: now[n] - before[n] for n in now}


def content(tag: str) -> bytes:
    return tag.encode().ljust(PAGE, b"#")


def get_order(size: int) -> int:
    order = 0
    while PAGE << order < size:
        order += 1
    return order


results: dict[str, object] = {}
pid = os.getpid()

# ksmd stays idle while the intakes are tested: queued hints stay queued.
k.unmerge(then=0)
k.write("hint_capacity", 4096)
region = Region(64)
for i in range(64):
    region.fill(i, content(f"intake {i}"))
rec = wire.Hint(pid, region.addr, PAGE).pack()
line = f"{pid} {region.addr:#x} {PAGE}\n".encode()

# 1. ksm_hints_open(): kmalloc of the text state.
c0 = counters()
r = inject(lambda: os.open(hints.HINTS_TEXT, os.O_WRONLY), slab={"space": OPEN_SPACE})
fd = os.open(hints.HINTS_TEXT, os.O_WRONLY)  # works again
os.write(fd, line)
os.close(fd)
r["after"] = delta(c0)
results["open"] = r

# 2. ksm_hints_write(): kmalloc of the batch. A carried-over line end survives
# the failed write: the next write completes it.
fd = os.open(hints.HINTS_TEXT, os.O_WRONLY)
head = f"{pid} {region.addr:#x}".encode()
tail = f" {PAGE}\n".encode()
os.write(fd, head)
c0 = counters()
r = inject(lambda: os.write(fd, tail), slab={})
r["during"] = delta(c0)
r["retry"] = os.write(fd, tail)
os.close(fd)
r["after"] = delta(c0)
results["text_write"] = r

# 3. ksm_hints_raw_write(): kmalloc of the batch.
fd = os.open(hints.HINTS_RAW, os.O_WRONLY)
c0 = counters()
r = inject(lambda: os.write(fd, rec), slab={})
r["during"] = delta(c0)
r["retry"] = os.write(fd, rec)
os.close(fd)
r["after"] = delta(c0)
results["raw_write"] = r

# 4. ksm_hints_release(): kmalloc of the batch for an unterminated last line.
# That line is lost and counted in hints_invalid, as an invalid one is.
fd = os.open(hints.HINTS_TEXT, os.O_WRONLY)
os.write(fd, line.rstrip(b"\n"))
c0 = counters()
r = inject(lambda: os.close(fd), slab={})
r["after"] = delta(c0)
fd = os.open(hints.HINTS_TEXT, os.O_WRONLY)
os.write(fd, line.rstrip(b"\n"))
c0 = counters()
os.close(fd)
r["control"] = delta(c0)  # the same close without a fault queues the line
results["release"] = r


# 5. hint_capacity: kvcalloc() in ksm_hint_stack_resize(). The stack is left
# unchanged: capacity, queued hints, hints_dropped_flush.
def capacity_write(value: int) -> Callable[[], object]:
    def write() -> object:
        return os.write(cap_fd, str(value).encode())

    return write


def queue(n: int) -> None:
    with open(hints.HINTS_RAW, "wb", buffering=0) as f:
        f.write(rec * n)


cap_fd = os.open(KSM_SYSFS / "hint_capacity", os.O_WRONLY)
cases: dict[str, dict[str, object]] = {}
# a) 64 hints, 2560 bytes: kmalloc only (kvmalloc does not fall back to
#    vmalloc at or below a page), failslab fails it.
# b) 8192 hints, 320 KiB: fail_page_alloc fails kmalloc's order-7 page
#    allocation (min-order keeps it off smaller ones); vmalloc takes over and
#    the resize succeeds.
# c) the same, and failslab fails vmalloc's first allocation (its vm_struct):
#    the kvcalloc() fails.
big = 8192
order = get_order(big * HINT_SIZE)
plans: dict[str, tuple[int, dict[str, int] | None, dict[str, int] | None]] = {
    "kmalloc": (64, {"space": SYSFS_SPACE}, None),
    "fallback": (big, None, {"min_order": order}),
    "kmalloc_vmalloc": (big, {"space": SYSFS_SPACE}, {"min_order": order}),
}
for name, (value, slab, page) in plans.items():
    k.write("hint_capacity", 4096)
    queue(3)
    c0 = counters()
    r = inject(capacity_write(value), slab=slab, page=page)
    r["capacity"] = k.read_int("hint_capacity")
    r["during"] = delta(c0)
    r["retry"] = os.write(cap_fd, str(value).encode())
    r["capacity_after_retry"] = k.read_int("hint_capacity")
    r["after"] = delta(c0)
    cases[name] = r
results["hint_capacity"] = cases
results["order"] = order
k.write("hint_capacity", 4096)

# 6. merge_across_nodes: kcalloc() of the stable, unstable and hint tree roots
# (the series makes it 3 * nr_node_ids), allocated on the first switch to 0.
man_fd = os.open(KSM_SYSFS / "merge_across_nodes", os.O_WRONLY)
r = inject(lambda: os.write(man_fd, b"0"), slab={"space": SYSFS_SPACE})
r["value"] = k.read_int("merge_across_nodes")
r["retry"] = os.write(man_fd, b"0")
r["value_after_retry"] = k.read_int("merge_across_nodes")
os.write(man_fd, b"1")
results["merge_across_nodes"] = r

os.close(cap_fd)
os.close(man_fd)


# --- ksmd's sites ------------------------------------------------------------
def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def arm_ksmd(n: int) -> None:
    kmsg.read()
    arm(FAILSLAB, n=n)
    put(Path(f"/proc/{ksmd}/make-it-fail"), 1)


def disarm_ksmd() -> None:
    put(Path(f"/proc/{ksmd}/make-it-fail"), 0)
    disarm(FAILSLAB)


ksmd = ksm.ksmd_pid()
PAGES = 2048
k.unmerge(then=2)
k.write("hint_capacity", 4096)
k.write("hint_interleave", "1:1")
k.write("pages_to_scan", 20)
k.write("sleep_millisecs", 20)
if k.has("smart_scan"):
    k.write("smart_scan", 0)
a = Region(PAGES)
gen = {i: f"region a page {i}" for i in range(PAGES)}
for i in range(PAGES):
    a.fill(i, content(gen[i]))
k.write("run", 1)
scans = k.read_int("full_scans")
if not wait_until(lambda: k.read_int("full_scans") >= scans + 2, 300):
    sys.exit("alloc_faults: ksmd did not finish two rounds")

# 7. alloc_rmap_item() on the hint path (ksm_hint_rmap_item): the hinted page
# is skipped (not scanned), the hint is used up, and the next hint works. A
# fresh one-page region B, its twin in A, is hinted before the linear scan
# gets to it; if the linear scan took the failure instead, try again.
attempts = []
bs = []  # kept mapped: an unmapped region would make ksmd free (and erase) items
for attempt in range(5):
    b = Region(1)
    bs.append(b)
    gen[100 + attempt] = f"twin {attempt}"
    twin = content(gen[100 + attempt])
    a.fill(100 + attempt, twin)
    scanned0 = k.read_int("hint_pages_scanned")
    merged0 = k.read_int("hint_pages_merged")
    arm_ksmd(1)
    b.fill(0, twin)
    with hints.HintWriter() as w:
        w.send([wire.Hint(pid, b.addr, PAGE)])
    consumed = wait_until(lambda: k.read_int("hints_pending") == 0, 30)
    disarm_ksmd()
    rec7: dict[str, object] = {
        "consumed": consumed,
        "injected": 1 - times(FAILSLAB),
        "scanned": k.read_int("hint_pages_scanned") - scanned0,
        "stack": stack_functions(kmsg.read()),
    }
    # The next hint visits the page and merges it with its twin in A (hinted
    # too, so that the pair meets in this round's hint tree).
    with hints.HintWriter() as w:
        w.send([wire.Hint(pid, a.addr + (100 + attempt) * PAGE, PAGE)])
        w.send([wire.Hint(pid, b.addr, PAGE)])
    rec7["merged_after"] = wait_until(lambda m=merged0: k.read_int("hint_pages_merged") > m, 60)
    rec7["scanned_after"] = k.read_int("hint_pages_scanned") - scanned0
    attempts.append(rec7)
    if rec7["scanned"] == 0 and rec7["injected"] == 1:
        break
results["hint_rmap_item"] = attempts

# 8. rmap_index_erase(): erasing an index entry can need maple nodes (a leaf
# that underflows is rebalanced). Unmapping a run of A frees its rmap_items
# as the linear scan passes; the first erase that allocates fails both its
# GFP_NOWAIT and its GFP_KERNEL attempt (times 2), and the whole index is
# destroyed. Lookups then index the list again: the run, faulted back in
# and hinted, merges with its twins, and every page keeps its contents.
# The index holds one entry per 16-page chunk, and only erasing enough
# neighbouring entries to empty a leaf allocates: the run spans 32 chunks,
# two leaves' worth.
RUN = range(512, 1024)
a.map.madvise(mmap.MADV_DONTNEED, RUN.start * PAGE, len(RUN) * PAGE)
arm_ksmd(2)
scans = k.read_int("full_scans")
passed = wait_until(lambda: k.read_int("full_scans") >= scans + 2, 300)
disarm_ksmd()
rec8: dict[str, object] = {
    "passed": passed,
    "injected": 2 - times(FAILSLAB),
    "stack": stack_functions(kmsg.read()),
}
merged0 = k.read_int("hint_pages_merged")
for i in RUN:
    gen[i] = f"back {i}" if i % 2 else f"region a page {i - 400}"
    a.fill(i, content(gen[i]))
with hints.HintWriter() as w:
    w.send([wire.Hint(pid, a.addr + i * PAGE, PAGE) for i in RUN if not i % 2])
    w.send([wire.Hint(pid, a.addr + (i - 400) * PAGE, PAGE) for i in RUN if not i % 2])
rec8["merged_after"] = wait_until(lambda: k.read_int("hint_pages_merged") >= merged0 + 8, 120)
rec8["merged"] = k.read_int("hint_pages_merged") - merged0
scans = k.read_int("full_scans")
rec8["rounds_after"] = wait_until(lambda: k.read_int("full_scans") >= scans + 2, 300)
rec8["wrong_pages"] = sum(
    1 for i in range(PAGES) if a.map[i * PAGE : (i + 1) * PAGE] != content(gen[i])
)
results["index_erase"] = rec8
k.write("run", 2)

Path(sys.argv[1]).write_text(json.dumps(results, indent=1))

"""Inside the patched test kernel: KSM++ efficacy, ksmd cost, hint ingest and
hint buffer size. Prints one JSON document (argv[1] is where it goes).

Efficacy workload (shaped like a host where most mergeable memory is unique):
one process with BIG MiB of MADV_MERGEABLE memory of unique content, and two
processes of FILE MiB each filled by read() from the same FILE MiB file into
MADV_MERGEABLE memory. pages_to_scan=100, sleep_millisecs=20, the kernel's
default hint_interleave. Measured: time from the end of the reads until 90 %
of the possible pages are merged, with hints (the readers' buffers hinted
right after each read, as the collector does) and without (hint_capacity=0).

ksmd's CPU per scanned page is taken twice: up to the 90 % point (hints on
reach it after mostly merge work, hints off after mostly checksumming unique
pages, so this compares different work) and over the same fixed window
after the reads in both modes (CPU_WINDOW s, long enough for both to merge
everything: the same work, so the ratio is the cost of the hint machinery).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pyksm.kernel import hints, ksm, wire

PAGE = mmap.PAGESIZE
BIG_MIB = int(os.environ.get("BIG_MIB", "1024"))
FILE_MIB = int(os.environ.get("FILE_MIB", "128"))
CHUNK = 1 << 20
TIMEOUT = float(os.environ.get("MERGE_TIMEOUT", "900"))
CPU_WINDOW = float(os.environ.get("CPU_WINDOW", "480"))
# None keeps the kernel's default hint_max_age_ms.
_age = os.environ.get("HINT_MAX_AGE_MS")
HINT_MAX_AGE_MS = int(_age) if _age else None
# hint_skip_volatility for the hinted run (the Security section's trade-off).
SKIP_VOLATILITY = int(os.environ.get("HINT_SKIP_VOLATILITY", "1"))
# PROFILE_S > 0: sample ksmd with perf for that many seconds after the reads
# of the hinted run (perf's sampling slows ksmd: use it in a run of its own).
PROFILE_S = float(os.environ.get("PROFILE_S", "0"))
# What a hinted visit does around its merge: the page table walk (once per batch
# of up to 16 pages since patch 17), and the mm lookup, lock and vma search.
PER_PAGE_SYMBOLS = ("walk_page_range_vma", "find_vma", "down_read", "up_read", "mmput_async")
# Tree calls whose samples the profile splits by caller: mtree_load serves both the
# rmap_index and vma_lookup() (inlined, so its samples show under mtree_load);
# mtree_insert() and mtree_store() leave no frame of their own (tail calls).
CALLERS_OF = (
    "mtree_load",
    "mt_prev",
    "mtree_insert_range",
    "mtree_store_range",
    "link_new_rmap_item",
)
k = ksm.Ksm()


def region(size: int) -> tuple[mmap.mmap, int]:
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_MERGEABLE)
    return m, ctypes.addressof(ctypes.c_char.from_buffer(m))


def reader(path: Path, hinted: bool, ready: int) -> None:
    m, addr = region(FILE_MIB << 20)
    view = memoryview(m)
    writer = hints.HintWriter() if hinted else None
    with path.open("rb", buffering=0) as f:
        off = 0
        while off < len(m):
            n = f.readinto(view[off : off + CHUNK])
            assert n
            if writer:
                writer.send([wire.Hint(os.getpid(), addr + off, n)])
            off += n
    os.write(ready, b"x")
    time.sleep(TIMEOUT + 60)  # keep the memory until the parent kills us


def perf_stacks(data: Path) -> list[list[str]]:
    """ksmd's sampled kernel stacks, innermost frame first (`perf script`)."""
    text = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "ip,sym"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stacks = (
        [
            m.group(1).split("+")[0]
            for m in re.finditer(r"^\s*[0-9a-f]+\s+(\S+)", block, re.MULTILINE)
        ]
        for block in text.split("\n\n")
    )
    return [frames for frames in stacks if frames]


def perf_children(stacks: list[list[str]]) -> dict[str, float]:
    """Inclusive share (%) of ksmd's samples per kernel symbol (≥ 0.1 %)."""
    counts: dict[str, int] = {}
    for frames in stacks:
        for sym in set(frames):
            counts[sym] = counts.get(sym, 0) + 1
    shares = {sym: 100 * n / max(len(stacks), 1) for sym, n in counts.items()}
    return {sym: pct for sym, pct in sorted(shares.items(), key=lambda kv: -kv[1]) if pct >= 0.1}


def perf_callers(stacks: list[list[str]], symbols: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """For each of @symbols, the share (%) of all ksmd samples spent in it,
    split by the two frames that called it ("caller < its caller")."""
    counts: dict[str, dict[str, int]] = {sym: {} for sym in symbols}
    for frames in stacks:
        for sym in symbols:
            if sym not in frames:
                continue
            i = frames.index(sym)
            while i < len(frames) and frames[i] == sym:
                i += 1
            key = " < ".join(frames[i : i + 2] or ["(top)"])
            counts[sym][key] = counts[sym].get(key, 0) + 1
    return {
        sym: {
            key: 100 * n / max(len(stacks), 1)
            for key, n in sorted(by.items(), key=lambda kv: -kv[1])
        }
        for sym, by in counts.items()
    }


def profile_hinted(seconds: float) -> dict[str, object]:
    """Sample ksmd's kernel stacks for @seconds while it works through hints."""
    if shutil.which("perf") is None:
        sys.exit("PROFILE_S needs perf (Debian: linux-perf; make setup installs it)")
    data = Path("/tmp/pyksm-ksmd.perf")
    cpu0, hinted0 = ksmd_cpu_s(), k.read_int("hint_pages_scanned")
    scanned0 = k.read_int("pages_scanned")
    subprocess.run(
        [
            "perf",
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "499",
            "-g",
            "-o",
            str(data),
            "-p",
            str(ksm.ksmd_pid()),
            "--",
            "sleep",
            str(seconds),
        ],
        capture_output=True,
        check=True,
    )
    cpu_s = ksmd_cpu_s() - cpu0
    hinted = k.read_int("hint_pages_scanned") - hinted0
    scanned = k.read_int("pages_scanned") - scanned0
    stacks = perf_stacks(data)
    shares = perf_children(stacks)
    per_page = sum(shares.get(sym, 0.0) for sym in PER_PAGE_SYMBOLS)
    # Every visit's walk: scan_get_next_rmap_item() and ksm_hint_visit() are both
    # inlined into ksm_scan_thread, so no frame tells a hinted walk from a linear one.
    walk = shares.get("walk_page_range_vma", 0.0)
    us_per_scanned = cpu_s * 1e6 / max(scanned, 1)

    def us_per_hinted_page(pct: float) -> float:
        return pct / 100 * cpu_s * 1e6 / max(hinted, 1)

    return {
        "seconds": seconds,
        "ksmd_cpu_s": cpu_s,
        "pages_scanned": scanned,
        "hint_pages_scanned": hinted,
        "children_pct": shares,
        "callers_pct": perf_callers(stacks, CALLERS_OF),
        "per_page_symbols": list(PER_PAGE_SYMBOLS),
        "per_page_pct": per_page,
        "walk_pct": walk,
        "walk_us_per_scanned_page": walk / 100 * us_per_scanned,
        "per_page_us_per_hinted_page": us_per_hinted_page(per_page),
        "ksmd_us_per_scanned_page": us_per_scanned,
    }


def efficacy(hinted: bool, data: Path) -> dict[str, object]:
    k.unmerge(then=2)  # unmerge everything, flush hints
    k.write("hint_capacity", 4096 if hinted else 0)
    if HINT_MAX_AGE_MS is not None:
        k.write("hint_max_age_ms", HINT_MAX_AGE_MS)
    k.write("hint_skip_volatility", SKIP_VOLATILITY)
    k.write("pages_to_scan", 100)
    k.write("sleep_millisecs", 20)
    big, _ = region(BIG_MIB << 20)
    arr = np.frombuffer(big, dtype=np.uint64)
    arr[:: PAGE // 8] = np.arange(len(arr) // (PAGE // 8), dtype=np.uint64) + (7 << 40)
    k.write("run", 1)
    time.sleep(5)  # ksmd is mid-way through the unique memory, as on a busy host
    r, w = os.pipe()
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            reader(data, hinted, w)
            os._exit(0)
        kids.append(pid)
    os.close(w)
    for _ in kids:
        os.read(r, 1)
    t0 = time.monotonic()
    cpu0, scanned0 = ksmd_cpu_s(), k.read_int("pages_scanned")
    full0 = k.read_int("full_scans")
    target = 0.9 * (FILE_MIB << 20) // PAGE

    def cost() -> dict[str, float]:
        cpu = ksmd_cpu_s() - cpu0
        scanned = k.read_int("pages_scanned") - scanned0
        return {
            "seconds": time.monotonic() - t0,
            "pages_scanned": scanned,
            "ksmd_cpu_s": cpu,
            "ksmd_us_per_page": cpu * 1e6 / max(scanned, 1),
            "pages_sharing": k.read_int("pages_sharing"),
        }

    profile = profile_hinted(PROFILE_S) if hinted and PROFILE_S > 0 else None
    at_90: dict[str, float] | None = None
    window: dict[str, float] | None = None
    while time.monotonic() - t0 < TIMEOUT and (at_90 is None or window is None):
        if at_90 is None and k.read_int("pages_sharing") >= target:
            at_90 = cost()
        if window is None and time.monotonic() - t0 >= CPU_WINDOW:
            window = cost()
        time.sleep(0.1)
    out: dict[str, object] = {
        "seconds_to_90pct": at_90["seconds"] if at_90 else float("nan"),
        "to_90pct": at_90,
        "window": window or cost(),
        "full_scans_during": k.read_int("full_scans") - full0,
        "hint_pages_scanned": k.read_int("hint_pages_scanned"),
        "hint_pages_merged": k.read_int("hint_pages_merged"),
        "hints_dropped_age": k.read_int("hints_dropped_age"),
        "hints_dropped_overflow": k.read_int("hints_dropped_overflow"),
    }
    if profile is not None:
        out["profile"] = profile
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    del arr
    big.close()
    return out


def ingest(seconds: float = 3.0) -> dict[str, float]:
    k.write("hint_capacity", 4096)
    m, addr = region(64 * PAGE)
    m[:] = b"\1" * len(m)
    batch = [wire.Hint(os.getpid(), addr + (i % 64) * PAGE, PAGE) for i in range(4096)]
    data = wire.pack_many(batch)
    fd = os.open(hints.HINTS_RAW, os.O_WRONLY)
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        os.write(fd, data)
        n += len(batch)
    rate = n / (time.monotonic() - t0)
    os.close(fd)
    return {"records_per_s": rate, "batch": len(batch)}


def madvise_ingest(seconds: float = 3.0) -> dict[str, float]:
    """process_madvise(MADV_KSM_HINT) into this process, UIO_MAXIOV ranges a call."""
    k.write("hint_capacity", 4096)
    m, addr = region(64 * PAGE)
    m[:] = b"\1" * len(m)
    ranges = [(addr + (i % 64) * PAGE, PAGE) for i in range(hints.MAX_IOV)]
    iov = hints.iovecs(ranges)  # built once, as the batch of ingest() is packed once
    fd = os.pidfd_open(os.getpid())
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        hints.process_madvise_iov(fd, iov, hints.MADV_KSM_HINT)
        n += len(ranges)
    rate = n / (time.monotonic() - t0)
    os.close(fd)
    return {"ranges_per_s": rate, "batch": len(ranges)}


def ksmd_cpu_s() -> float:
    """ksmd's CPU time in ns (schedstat) rather than USER_HZ ticks.

    utime + stime add up to the same exact runtime, but in 10 ms steps: over
    a 30 s window in which ksmd runs about 1.5 s that is up to 0.7 % apart
    between equal windows, more than the effects the linear-visit cost
    looks for on an instruction-counted clock.
    """
    return ksm.ksmd_runtime_ns() / 1e9


def wait_full_scans(n: int, timeout: float = 900) -> None:
    target = k.read_int("full_scans") + n
    deadline = time.monotonic() + timeout
    while k.read_int("full_scans") < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ksmd did not finish {n} rounds in {timeout:.0f} s")
        time.sleep(0.05)


def index_memory() -> dict[str, float]:
    """Slab bytes per rmap_item with hints off and on (the per-mm index).

    BIG MiB of unique mergeable memory; every page gets an rmap_item after
    two full scans. Hints off: no index. Hints on: items linked while hints
    are on are indexed. The difference of Slab between the two, over the
    number of rmap_items, is the index's cost per item; Slab with hints off
    against Slab with no rmap_items, less 64 bytes an item, is what hints
    off cost beyond upstream (0 by construction).
    """
    k.write("run", 2)
    k.write("hint_capacity", 0)
    k.write("pages_to_scan", 10000)
    k.write("sleep_millisecs", 10)
    big, _ = region(BIG_MIB << 20)
    arr = np.frombuffer(big, dtype=np.uint64)
    arr[:: PAGE // 8] = np.arange(len(arr[:: PAGE // 8]), dtype=np.uint64) + 7
    base = meminfo("Slab")
    out: dict[str, float] = {}
    for mode, cap in (("off", 0), ("on", 4096)):
        k.write("run", 2)
        k.write("hint_capacity", cap)
        k.write("run", 1)
        wait_full_scans(2)
        k.write("run", 0)
        time.sleep(0.5)
        out[f"slab_{mode}_bytes"] = meminfo("Slab")
        out[f"rmap_items_{mode}"] = float(ksm.process_stat(os.getpid())["ksm_rmap_items"])
    items = out["rmap_items_on"]
    out["slab_base_bytes"] = base
    out["index_bytes_per_item"] = (out["slab_on_bytes"] - out["slab_off_bytes"]) / items
    out["hints_off_extra_bytes_per_item"] = (
        out["slab_off_bytes"] - base - 64 * out["rmap_items_off"]
    ) / out["rmap_items_off"]
    k.write("run", 2)
    k.write("hint_capacity", 0)  # frees the indexes
    k.write("hint_capacity", 4096)
    del arr
    big.close()
    return out


def linear_cost(window: float = 30.0, reps: int = 3) -> dict[str, object]:
    """ksmd CPU per scanned page over unique memory, hints off against hints
    on with a full hint tree: only linear steps run in the window (the hints
    were consumed first, in the same round), so the ratio is what hints cost
    a linear visit.

    TCG on a shared 2-CPU host moves ksmd's CPU per page by several per cent
    from one half minute to the next (HINTS_BENCH_CLOCK=icount removes the
    host from it: then ksmd's CPU is its instruction count), so each rep runs
    three windows: off, on, and a control that is off again (its ratio to
    off is what the host's noise alone makes of two equal windows), in an order that
    rotates so every mode takes every position equally often. The ratio of
    each rep is kept; the median over the reps is the figure. Each window
    is preceded by a full round at a fast rate (every page gets its
    rmap_item, hinted pages their hint-tree nodes) and measured at 100
    pages / 20 ms.
    """
    k.write("run", 2)
    if k.has("smart_scan"):
        k.write("smart_scan", 0)
    # Hinted pages go into the hint tree on their first visit (whatever an
    # efficacy run before left the knob at).
    k.write("hint_skip_volatility", 1)
    big, _ = region(BIG_MIB << 20)
    arr = np.frombuffer(big, dtype=np.uint64)
    arr[:: PAGE // 8] = np.arange(len(arr[:: PAGE // 8]), dtype=np.uint64) + 11
    small, saddr = region(4096 * PAGE)
    sarr = np.frombuffer(small, dtype=np.uint64)
    sarr[:: PAGE // 8] = np.arange(4096, dtype=np.uint64) + (1 << 40)

    def window_us_per_page(cap: int) -> tuple[float, bool]:
        k.write("run", 2)
        k.write("hint_capacity", cap)
        k.write("pages_to_scan", 4000)
        k.write("sleep_millisecs", 20)
        k.write("run", 1)
        wait_full_scans(1)
        if cap:
            with hints.HintWriter() as w:
                w.send(
                    [wire.Hint(os.getpid(), saddr + i * 64 * PAGE, 64 * PAGE) for i in range(64)]
                )
            while k.read_int("hints_pending"):
                time.sleep(0.01)
        k.write("pages_to_scan", 100)
        scans = k.read_int("full_scans")
        c0, p0 = ksmd_cpu_s(), k.read_int("pages_scanned")
        time.sleep(window)
        c1, p1 = ksmd_cpu_s(), k.read_int("pages_scanned")
        return (c1 - c0) * 1e6 / max(1, p1 - p0), k.read_int("full_scans") == scans

    pairs: list[dict[str, float]] = []
    same_round = True
    caps = {"off": 0, "on": 4096, "ctl": 0}
    rotations = (("off", "on", "ctl"), ("on", "ctl", "off"), ("ctl", "off", "on"))
    for rep in range(reps):
        got: dict[str, float] = {}
        for mode in rotations[rep % 3]:
            got[mode], same = window_us_per_page(caps[mode])
            same_round = same_round and same
        pairs.append(
            {
                "us_per_page_off": got["off"],
                "us_per_page_on": got["on"],
                "us_per_page_ctl": got["ctl"],
                "ratio_on_off": got["on"] / got["off"],
                "ratio_ctl_off": got["ctl"] / got["off"],
            }
        )
    ratios = [p["ratio_on_off"] for p in pairs]
    controls = [p["ratio_ctl_off"] for p in pairs]
    k.write("run", 2)
    if k.has("smart_scan"):
        k.write("smart_scan", 1)
    del arr, sarr
    big.close()
    small.close()
    return {
        "window_s": window,
        "pairs": pairs,
        "same_round": same_round,
        "us_per_page_off": float(np.median([p["us_per_page_off"] for p in pairs])),
        "us_per_page_on": float(np.median([p["us_per_page_on"] for p in pairs])),
        "us_per_page_ctl": float(np.median([p["us_per_page_ctl"] for p in pairs])),
        "ratio_on_off": float(np.median(ratios)),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_ctl_off": float(np.median(controls)),
        "ratio_ctl_min": min(controls),
        "ratio_ctl_max": max(controls),
    }


def meminfo(field: str) -> int:
    # Fold the per-cpu vmstat deltas first: unfolded, MemFree lags by up
    # to a second and by hundreds of pages per CPU.
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/stat_refresh").write_text("1")
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def free_bytes() -> int:
    """MemFree plus the pages parked in per-cpu page lists (/proc/zoneinfo).

    An order-9 allocation (a 2 MiB stack) refills the per-cpu list with a
    second 2 MiB block, which MemFree counts as used; with the lists
    added back only what was really allocated remains.
    """
    pcp = 0
    for line in Path("/proc/zoneinfo").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "count:":
            pcp += int(parts[1])
    return meminfo("MemFree") + pcp * PAGE


def buffer_size(rounds: int = 7) -> dict[str, object]:
    """Free memory drop when the stack grows from 0 to its largest capacity.

    One MemFree difference is noisy (page-cache and per-cpu list churn of
    the whole VM), so the capacity is switched back and forth ``rounds``
    times next to a control that changes nothing (0 -> 0); medians are
    reported. The stack itself is capacity x sizeof(struct ksm_hint) =
    40 bytes on 64-bit.
    """
    k.write("hint_capacity", 0)
    cap = 1 << 24
    while cap:
        try:
            k.write("hint_capacity", cap)
            break
        except Exception:
            cap //= 2
    drops: list[int] = []
    control: list[int] = []
    for _ in range(rounds):
        for target, out in ((cap, drops), (0, control)):
            k.write("hint_capacity", 0)
            time.sleep(0.3)
            free0 = free_bytes()
            k.write("hint_capacity", target)
            time.sleep(0.3)
            out.append(free0 - free_bytes())
    k.write("hint_capacity", 4096)
    drop = float(np.median(drops)) - float(np.median(control))
    return {
        "max_capacity": cap,
        "by_construction_bytes": cap * 40,
        "free_drop_bytes": drop,
        "drops": drops,
        "control": control,
    }


def main() -> None:
    hints.ensure_debugfs()
    data = Path("/tmp/pyksm-efficacy.bin")
    rng = np.random.default_rng(42)
    data.write_bytes(rng.integers(0, 256, FILE_MIB << 20, dtype=np.uint8).tobytes())
    result: dict[str, object] = {
        "big_mib": BIG_MIB,
        "file_mib": FILE_MIB,
        "cpu_window_s": CPU_WINDOW,
        "hint_skip_volatility": SKIP_VOLATILITY,
        "hint_max_age_ms": k.read_int("hint_max_age_ms")
        if HINT_MAX_AGE_MS is None
        else HINT_MAX_AGE_MS,
    }
    # EFFICACY=0: no efficacy runs; EFFICACY=on: the hinted run only.
    modes = {"0": (), "on": (True,)}.get(os.environ.get("EFFICACY", "1"), (False, True))
    for hinted in modes:
        result["on" if hinted else "off"] = efficacy(hinted, data)
    result["ingest"] = ingest()
    if hints.madvise_supported():
        result["madvise_ingest"] = madvise_ingest()
    if os.environ.get("COST", "1") != "0":  # COST=0: skip the index and linear-visit costs
        result["index_memory"] = index_memory()
        result["linear_cost"] = linear_cost(
            float(os.environ.get("COST_WINDOW", "30")), int(os.environ.get("COST_REPS", "3"))
        )
    result["buffer"] = buffer_size()
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

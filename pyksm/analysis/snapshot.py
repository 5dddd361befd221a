"""Capture snapshots of processes' present pages: content hash + flags per page.

Sources (Linux, ``Documentation/admin-guide/mm/pagemap.rst``):

- ``/proc/PID/smaps`` — the VMAs; ``VmFlags: mg`` marks MADV_MERGEABLE ones
  (QEMU's guest RAM is MADV_MERGEABLE unless ``mem-merge=off``).
- ``/proc/PID/pagemap`` — 8 bytes per virtual page: bit 63 present, bit 61
  file page or shared anonymous, bits 0-54 the PFN (zero unless CAP_SYS_ADMIN).
- ``/proc/PID/mem`` — the content of the present pages (read only in present
  runs, so nothing is faulted in).
- ``/proc/kpageflags`` — 8 bytes per PFN: bit 21 KPF_KSM, bit 24 KPF_ZERO_PAGE.

What can fail: a missing or foreign process (PyksmError naming the pid and
the permission needed); a process that exits mid-run just contributes no pages
from then on. Pages are read while the process runs, so a page written during
the read may hash to a mix of old and new content.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pyksm.analysis.pagehash import PAGE_SIZE, hash_pages
from pyksm.analysis.series import FORMAT, FORMAT_VERSION, Flag, SnapshotSeries
from pyksm.errors import PyksmError

__all__ = ["Region", "capture", "regions", "snapshot_once"]

PM_PRESENT = np.uint64(1 << 63)
PM_FILE = np.uint64(1 << 61)
PM_PFN = np.uint64((1 << 55) - 1)
KPF_ANON = 12
KPF_KSM = 21
KPF_ZERO_PAGE = 24
READ_CHUNK = 16 << 20
SELECT = ("mergeable", "anon", "all")

_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    perms: str
    path: str
    mergeable: bool


def regions(pid: int, select: str = "mergeable") -> list[Region]:
    """The VMAs of ``pid`` to snapshot: ``mergeable`` (VmFlags mg), ``anon`` or ``all``."""
    if select not in SELECT:
        raise PyksmError(f"unknown region selection {select!r}: one of {', '.join(SELECT)}")
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except FileNotFoundError:
        raise PyksmError(f"no process {pid}") from None
    except PermissionError:
        raise PyksmError(f"cannot read /proc/{pid}/smaps: run as root or as its owner") from None
    out: list[Region] = []
    cur: list[Any] | None = None
    for line in text.splitlines():
        m = _RANGE.match(line)
        if m:
            if cur:
                out.append(Region(*cur))
            cur = [int(m[1], 16), int(m[2], 16), m[3], m[4].strip(), False]
        elif line.startswith("VmFlags:") and cur is not None:
            cur[4] = "mg" in line[8:].split()
    if cur:
        out.append(Region(*cur))
    keep: list[Region] = []
    for r in out:
        if "r" not in r.perms or r.path == "[vsyscall]":
            continue
        if select == "mergeable" and not r.mergeable:
            continue
        if select == "anon" and (r.path and not r.path.startswith("[")):
            continue
        keep.append(r)
    return keep


def _read_kpageflags(fd: int | None, pfns: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    out = np.zeros(pfns.size, dtype=np.uint64)
    if fd is None or pfns.size == 0:
        return out
    nz = pfns != 0
    u = np.unique(pfns[nz])
    if u.size == 0:
        return out
    flags = np.zeros(u.size, dtype=np.uint64)
    breaks = np.flatnonzero(np.diff(u) > 64) + 1
    first = 0
    for end in [*breaks.tolist(), u.size]:
        grp = u[first:end]
        lo, hi = int(grp[0]), int(grp[-1])
        try:
            data = os.pread(fd, (hi - lo + 1) * 8, lo * 8)
        except OSError:
            first = end
            continue
        arr = np.frombuffer(data, dtype=np.uint64)
        idx = (grp - np.uint64(lo)).astype(np.int64)
        ok = idx < arr.size
        flags[first:end][ok] = arr[idx[ok]]
        first = end
    out[nz] = flags[np.searchsorted(u, pfns[nz])]
    return out


def _read_region(mem_fd: int, pagemap_fd: int, r: Region) -> tuple[Any, ...] | None:
    npages = (r.end - r.start) // PAGE_SIZE
    try:
        pm = np.frombuffer(
            os.pread(pagemap_fd, npages * 8, (r.start // PAGE_SIZE) * 8), dtype=np.uint64
        )
    except OSError:
        return None
    present = np.flatnonzero((pm & PM_PRESENT) != 0)
    if present.size == 0:
        return None
    buf = np.empty(present.size * PAGE_SIZE, dtype=np.uint8)
    ok = np.ones(present.size, dtype=np.bool_)
    # contiguous runs of present pages, each read with as few preads as possible
    run_breaks = np.flatnonzero(np.diff(present) != 1) + 1
    run_starts = np.concatenate([[0], run_breaks])
    run_ends = np.concatenate([run_breaks, [present.size]])
    view = buf.data
    for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        off = a
        while off < b:
            n = min(b - off, READ_CHUNK // PAGE_SIZE)
            addr = r.start + int(present[off]) * PAGE_SIZE
            try:
                got = os.preadv(mem_fd, [view[off * PAGE_SIZE : (off + n) * PAGE_SIZE]], addr)
            except OSError:
                got = 0
            whole = got // PAGE_SIZE
            if whole < n:
                ok[off + whole : off + n] = False
            off += n
    vaddr = r.start + present.astype(np.uint64) * np.uint64(PAGE_SIZE)
    entries = pm[present]
    return vaddr[ok], entries[ok], buf.reshape(-1, PAGE_SIZE)[ok]


def snapshot_once(
    pids: Iterable[int], select: str = "mergeable", raw: bool = False
) -> dict[str, npt.NDArray[Any]]:
    """One snapshot of ``pids`` (arrays pid, vaddr, hash, flags, pfn[, raw])."""
    parts: dict[str, list[npt.NDArray[Any]]] = {
        k: [] for k in ("pid", "vaddr", "hash", "flags", "pfn", "raw")
    }
    try:
        kpf_fd: int | None = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        kpf_fd = None
    try:
        for pid in pids:
            try:
                regs = regions(pid, select)
                mem_fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
            except PyksmError:
                if Path(f"/proc/{pid}").exists():
                    raise
                continue  # exited
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ESRCH):
                    continue
                raise PyksmError(
                    f"cannot open /proc/{pid}/mem: {e.strerror} (needs root or ptrace access)"
                ) from None
            try:
                pagemap_fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
            except OSError as e:
                os.close(mem_fd)
                if e.errno in (errno.ENOENT, errno.ESRCH):
                    continue
                raise PyksmError(f"cannot open /proc/{pid}/pagemap: {e.strerror}") from None
            try:
                for r in regs:
                    got = _read_region(mem_fd, pagemap_fd, r)
                    if got is None:
                        continue
                    vaddr, entries, pages = got
                    h, zero = hash_pages(pages)
                    pfn = entries & PM_PFN
                    kpf = _read_kpageflags(kpf_fd, pfn)
                    is_file = (entries & PM_FILE) != 0
                    f = np.full(h.size, int(Flag.PRESENT), dtype=np.uint8)
                    f |= np.where(is_file, np.uint8(Flag.FILE), np.uint8(Flag.ANON))
                    f |= np.where(zero, np.uint8(Flag.ZERO), np.uint8(0))
                    ksm = ((kpf >> np.uint64(KPF_KSM)) & np.uint64(1)) != 0
                    zp = ((kpf >> np.uint64(KPF_ZERO_PAGE)) & np.uint64(1)) != 0
                    f |= np.where(ksm, np.uint8(Flag.KSM), np.uint8(0))
                    f |= np.where(zp, np.uint8(Flag.ZERO_PFN), np.uint8(0))
                    parts["pid"].append(np.full(h.size, pid, dtype=np.int32))
                    parts["vaddr"].append(vaddr)
                    parts["hash"].append(h)
                    parts["flags"].append(f)
                    parts["pfn"].append(pfn)
                    if raw:
                        parts["raw"].append(pages)
            finally:
                os.close(mem_fd)
                os.close(pagemap_fd)
    finally:
        if kpf_fd is not None:
            os.close(kpf_fd)
    out: dict[str, npt.NDArray[Any]] = {}
    for k, dtype in (
        ("pid", np.int32),
        ("vaddr", np.uint64),
        ("hash", np.uint64),
        ("flags", np.uint8),
        ("pfn", np.uint64),
    ):
        out[k] = np.concatenate(parts[k]) if parts[k] else np.empty(0, dtype=dtype)
    if raw:
        out["raw"] = (
            np.concatenate(parts["raw"]) if parts["raw"] else np.empty((0, PAGE_SIZE), np.uint8)
        )
    return out


def _ksm_counters() -> dict[str, int]:
    out: dict[str, int] = {}
    root = Path("/sys/kernel/mm/ksm")
    for name in ("pages_sharing", "pages_shared", "pages_unshared", "pages_volatile", "full_scans"):
        try:
            out[name] = int((root / name).read_text())
        except (OSError, ValueError):
            continue
    return out


def capture(
    pids: list[int],
    interval: float = 1.0,
    count: int = 10,
    select: str = "mergeable",
    raw: bool = False,
    progress: Callable[[int, float, int], None] | None = None,
) -> SnapshotSeries:
    """``count`` snapshots of ``pids``, one every ``interval`` seconds.

    Each snapshot records the KSM sysfs counters read just before it.
    ``progress(i, seconds, pages)`` is called after each snapshot.
    """
    if not pids:
        raise PyksmError("no process to snapshot: give at least one pid")
    if interval <= 0 or count <= 0:
        raise PyksmError("interval and count must be positive")
    snaps: list[dict[str, npt.ArrayLike]] = []
    times: list[float] = []
    ksm: list[dict[str, int]] = []
    durations: list[float] = []
    t0 = time.monotonic()
    for i in range(count):
        due = t0 + i * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        start = time.monotonic()
        ksm.append(_ksm_counters())
        snaps.append(dict(snapshot_once(pids, select, raw)))
        times.append(start - t0)
        durations.append(time.monotonic() - start)
        if progress:
            progress(i, durations[-1], len(np.asarray(snaps[-1]["hash"])))
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "page_size": PAGE_SIZE,
        "pids": pids,
        "interval": interval,
        "select": select,
        "t0_monotonic": t0,
        "captured_at": time.time(),
        "capture_seconds": durations,
        "uname": os.uname().release,
    }
    return SnapshotSeries.build(snaps, times, meta=meta, ksm=ksm)

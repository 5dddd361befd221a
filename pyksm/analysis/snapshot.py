"""Capture snapshots of processes' present pages: content hash + flags per page.

Sources (Linux, ``Documentation/admin-guide/mm/pagemap.rst``):

- ``/proc/PID/smaps`` — the VMAs; ``VmFlags: mg`` marks MADV_MERGEABLE ones
  (QEMU's guest RAM is MADV_MERGEABLE unless ``mem-merge=off``).
- ``/proc/PID/pagemap`` — 8 bytes per virtual page: bit 63 present, bit 61
  file page or shared anonymous, bits 0-54 the PFN (zero unless CAP_SYS_ADMIN).
- ``/proc/PID/mem`` — the content of the present pages (read only in present
  runs, so nothing is faulted in).
- ``/proc/kpageflags`` — 8 bytes per PFN: bit 21 KPF_KSM, bit 24 KPF_ZERO_PAGE.
- ``/proc/kpagecount`` — 8 bytes per PFN: how many times the frame is mapped.

What can fail: a missing or foreign process (PyksmError naming the pid and
the permission needed); a process that exits mid-run just contributes no pages
from then on. Pages are read while the process runs, so a page written during
the read may hash to a mix of old and new content.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
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
from pyksm.procfs import parse_smaps, read_smaps

__all__ = ["Region", "capture", "regions", "snapshot_once"]

PM_PRESENT = np.uint64(1 << 63)
PM_FILE = np.uint64(1 << 61)
PM_PFN = np.uint64((1 << 55) - 1)
KPF_KSM = 21
KPF_ZERO_PAGE = 24
READ_CHUNK = 16 << 20
SELECT = ("mergeable", "anon", "all")


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
    out = [
        Region(m.start, m.end, m.perms, m.path, m.mergeable) for m in parse_smaps(read_smaps(pid))
    ]
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


def _read_per_pfn(fd: int | None, pfns: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
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


def _read_region(
    mem_fd: int, pagemap_fd: int, kpc_fd: int | None, r: Region
) -> tuple[Any, ...] | None:
    """The present pages of ``r``: (vaddr, pagemap entry, content, stable, shared_before).

    ``shared_before``: the page's frame was mapped more than once before its
    content was read and is still its frame after; without /proc/kpagecount
    (``kpc_fd`` None) every page counts as such. See ``_settle``.
    """
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
    first_pfn = pm[present] & PM_PFN
    if kpc_fd is None:
        shared_before = np.ones(present.size, dtype=np.bool_)
    else:
        shared_before = _read_per_pfn(kpc_fd, first_pfn) >= np.uint64(2)
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
    entries = pm[present].copy()
    pages = buf.reshape(-1, PAGE_SIZE)
    stable = _recheck(mem_fd, pagemap_fd, r.start, present, entries, pages, ok)
    # a page _recheck read again sits on a frame not counted before that read
    shared_before &= (entries & PM_PFN) == first_pfn
    vaddr = r.start + present.astype(np.uint64) * np.uint64(PAGE_SIZE)
    return vaddr[ok], entries[ok], pages[ok], stable[ok], shared_before[ok]


PM_IDENTITY = PM_PRESENT | PM_PFN
RECHECKS = 3


def _recheck(
    mem_fd: int,
    pagemap_fd: int,
    start: int,
    present: npt.NDArray[np.intp],
    entries: npt.NDArray[np.uint64],
    pages: npt.NDArray[np.uint8],
    ok: npt.NDArray[np.bool_],
) -> npt.NDArray[np.bool_]:
    """Pages whose mapping (present bit, PFN) did not change while their content was read.

    A write to a KSM page (or any COW page) replaces it, so a page read between two
    equal pagemap entries is the content of that PFN. Changed pages are read again,
    up to RECHECKS times; those that keep changing come back False (Flag.UNSTABLE).
    """
    lo, hi = int(present[0]), int(present[-1]) + 1
    try:
        again = np.frombuffer(
            os.pread(pagemap_fd, (hi - lo) * 8, (start // PAGE_SIZE + lo) * 8), dtype=np.uint64
        )
    except OSError:
        return np.zeros(present.size, dtype=np.bool_)
    now = again[present - lo]
    moved = np.flatnonzero((now & PM_IDENTITY) != (entries & PM_IDENTITY))
    stable = np.ones(present.size, dtype=np.bool_)
    for _ in range(RECHECKS):
        if moved.size == 0:
            break
        still = []
        for i in moved.tolist():
            vpn = start // PAGE_SIZE + int(present[i])
            try:
                before = np.frombuffer(os.pread(pagemap_fd, 8, vpn * 8), dtype=np.uint64)[0]
                if not before & PM_PRESENT:
                    ok[i] = False
                    continue
                data = os.pread(mem_fd, PAGE_SIZE, vpn * PAGE_SIZE)
                after = np.frombuffer(os.pread(pagemap_fd, 8, vpn * 8), dtype=np.uint64)[0]
            except OSError:
                ok[i] = False
                continue
            if len(data) < PAGE_SIZE:
                ok[i] = False
                continue
            pages[i] = np.frombuffer(data, dtype=np.uint8)
            entries[i] = after
            if (before & PM_IDENTITY) != (after & PM_IDENTITY):
                still.append(i)
        moved = np.array(still, dtype=np.intp)
    stable[moved] = False
    return stable


def snapshot_once(
    pids: Iterable[int], select: str = "mergeable", raw: bool = False
) -> dict[str, npt.NDArray[Any]]:
    """One snapshot of ``pids`` (arrays pid, vaddr, hash, flags, pfn[, raw])."""
    parts: dict[str, list[npt.NDArray[Any]]] = {
        k: [] for k in ("pid", "vaddr", "hash", "flags", "pfn", "raw", "shared_before")
    }
    try:
        kpf_fd: int | None = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        kpf_fd = None
    try:
        kpc_fd: int | None = os.open("/proc/kpagecount", os.O_RDONLY)
    except OSError:
        kpc_fd = None
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
                    got = _read_region(mem_fd, pagemap_fd, kpc_fd, r)
                    if got is None:
                        continue
                    vaddr, entries, pages, stable, shared_before = got
                    h, zero = hash_pages(pages)
                    pfn = entries & PM_PFN
                    kpf = _read_per_pfn(kpf_fd, pfn)
                    is_file = (entries & PM_FILE) != 0
                    f = np.full(h.size, int(Flag.PRESENT), dtype=np.uint8)
                    f |= np.where(is_file, np.uint8(Flag.FILE), np.uint8(Flag.ANON))
                    f |= np.where(zero, np.uint8(Flag.ZERO), np.uint8(0))
                    ksm = ((kpf >> np.uint64(KPF_KSM)) & np.uint64(1)) != 0
                    zp = ((kpf >> np.uint64(KPF_ZERO_PAGE)) & np.uint64(1)) != 0
                    f |= np.where(ksm, np.uint8(Flag.KSM), np.uint8(0))
                    f |= np.where(zp, np.uint8(Flag.ZERO_PFN), np.uint8(0))
                    f |= np.where(stable, np.uint8(0), np.uint8(Flag.UNSTABLE))
                    parts["pid"].append(np.full(h.size, pid, dtype=np.int32))
                    parts["vaddr"].append(vaddr)
                    parts["hash"].append(h)
                    parts["flags"].append(f)
                    parts["pfn"].append(pfn)
                    parts["shared_before"].append(shared_before)
                    if raw:
                        parts["raw"].append(pages)
            finally:
                os.close(mem_fd)
                os.close(pagemap_fd)
    finally:
        for fd in (kpf_fd, kpc_fd):
            if fd is not None:
                os.close(fd)
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
    shared_before = (
        np.concatenate(parts["shared_before"])
        if parts["shared_before"]
        else np.empty(0, dtype=np.bool_)
    )
    _settle(out, shared_before)
    return out


def _settle(snap: dict[str, npt.NDArray[Any]], shared_before: npt.NDArray[np.bool_]) -> None:
    """Make the PFNs of one snapshot describe a single moment: its end.

    Processes are read one after another, so a PFN read early may have been freed
    (e.g. merged away by ksmd) and handed to a page read later; the two would look
    like one shared page. A last pagemap pass (one read per run of pages) takes the
    PFNs as they are now; pages whose mapping changed since their content was read
    get the new PFN and KPF flags and are flagged UNSTABLE.

    A page can also become shared without its PFN changing: an anonymous page is
    written in place (QEMU's preadv of a disk block into guest RAM), and ksmd
    (with hints, milliseconds later) makes that very frame the KSM page and maps
    the other copies to it. Its content as read may predate the write. Only a
    frame already mapped more than once before the read (write-protected: a write
    would have moved the page to a new frame) is known to hold what was read, so
    a page whose PFN is shared at the end but was not before its read
    (``shared_before``) is flagged UNSTABLE too.
    """
    pids, vaddr, pfn, flags = snap["pid"], snap["vaddr"], snap["pfn"], snap["flags"]
    if pfn.size == 0 or not pfn.any():
        return  # no PFNs (not root): nothing to settle
    changed = np.zeros(pfn.size, dtype=np.bool_)
    gone = np.zeros(pfn.size, dtype=np.bool_)
    for pid in np.unique(pids).tolist():
        idx = np.flatnonzero(pids == pid)
        vpn = (vaddr[idx] // np.uint64(PAGE_SIZE)).astype(np.int64)
        try:
            fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except OSError:
            continue
        try:
            order = np.argsort(vpn, kind="stable")
            sv = vpn[order]
            breaks = np.flatnonzero(np.diff(sv) > 512) + 1
            first = 0
            for end in [*breaks.tolist(), sv.size]:
                lo, hi = int(sv[first]), int(sv[end - 1]) + 1
                try:
                    now = np.frombuffer(os.pread(fd, (hi - lo) * 8, lo * 8), dtype=np.uint64)
                except OSError:
                    first = end
                    continue
                sel = idx[order[first:end]]
                e = now[sv[first:end] - lo]
                present = (e & PM_PRESENT) != 0
                new_pfn = e & PM_PFN
                moved = present & (new_pfn != pfn[sel])
                pfn[sel[moved]] = new_pfn[moved]
                changed[sel[moved]] = True
                gone[sel[~present]] = True
                first = end
        finally:
            os.close(fd)
    if changed.any():
        try:
            kfd: int | None = os.open("/proc/kpageflags", os.O_RDONLY)
        except OSError:
            kfd = None
        try:
            kpf = _read_per_pfn(kfd, pfn[changed])
        finally:
            if kfd is not None:
                os.close(kfd)
        f = flags[changed] & np.uint8(0xFF & ~(Flag.KSM | Flag.ZERO_PFN))
        f |= np.where((kpf >> np.uint64(KPF_KSM)) & np.uint64(1), np.uint8(Flag.KSM), 0).astype(
            np.uint8
        )
        f |= np.where(
            (kpf >> np.uint64(KPF_ZERO_PAGE)) & np.uint64(1), np.uint8(Flag.ZERO_PFN), 0
        ).astype(np.uint8)
        flags[changed] = f
    flags[changed | gone] |= np.uint8(Flag.UNSTABLE)
    _, where, times = np.unique(pfn, return_inverse=True, return_counts=True)
    # the zero page is never written, whatever kpagecount says of it
    shared_now = (times[where] >= 2) & (pfn != 0) & ((flags & np.uint8(Flag.ZERO_PFN)) == 0)
    flags[shared_now & ~shared_before] |= np.uint8(Flag.UNSTABLE)


def _ksm_counters() -> dict[str, int]:
    out: dict[str, int] = {}
    root = Path("/sys/kernel/mm/ksm")
    for name in (
        "pages_sharing",
        "pages_shared",
        "pages_unshared",
        "pages_volatile",
        "full_scans",
        "pages_scanned",
        "pages_skipped",
        "ksm_zero_pages",
    ):
        try:
            out[name] = int((root / name).read_text())
        except (OSError, ValueError):
            continue
    return out


def kpf_ksm_reliable() -> bool | None:
    """Does /proc/kpageflags set KPF_KSM only on KSM pages? (None: cannot tell)

    Linux 6.12's fs/proc/page.c tests ``mapping & PAGE_MAPPING_KSM``, which is
    true for every anonymous page, so there KPF_KSM marks all anonymous pages.
    Probed on a fresh private anonymous page of our own, which is never KSM.
    """
    m = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m[0:8] = b"pyksm!!!"
        cell = ctypes.c_char.from_buffer(m)
        addr = ctypes.addressof(cell)
        del cell
        with open("/proc/self/pagemap", "rb") as f:
            f.seek((addr // PAGE_SIZE) * 8)
            pfn = np.frombuffer(f.read(8), dtype=np.uint64) & PM_PFN
        if not pfn[0]:
            return None
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
        try:
            flags = _read_per_pfn(fd, pfn)
        finally:
            os.close(fd)
        return not bool((flags[0] >> np.uint64(KPF_KSM)) & np.uint64(1))
    except (OSError, ValueError):
        return None
    finally:
        m.close()


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
    for pid in pids:
        read_smaps(pid)  # a missing or unreadable process: say so now, not an empty series
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
        gone = [pid for pid in pids if not Path(f"/proc/{pid}").exists()]
        if gone:
            raise PyksmError(
                f"process {gone[0]} exited during snapshot {i + 1} of {count}: "
                "the series would be silently partial"
            )
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
        "kpf_ksm_reliable": kpf_ksm_reliable(),
        "captured_at": time.time(),
        "capture_seconds": durations,
        "uname": os.uname().release,
    }
    return SnapshotSeries.build(snaps, times, meta=meta, ksm=ksm)

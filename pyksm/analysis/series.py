"""The in-memory form of a snapshot sequence: what every analysis step reads.

A :class:`SnapshotSeries` holds T snapshots of the present pages of some
processes. Page arrays are concatenated; snapshot ``i`` owns the slice
``offsets[i]:offsets[i + 1]``. A page is identified across snapshots by its
*site*: ``pid << 36 | vaddr >> 12`` (:func:`site_key`).

Flags (one byte per page, :class:`Flag`) come from /proc/PID/pagemap,
/proc/kpageflags and the page's content.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pyksm.errors import PyksmError

__all__ = ["FORMAT", "FORMAT_VERSION", "Flag", "SnapshotSeries", "site_key"]

FORMAT = "pyksm-snapshots"
FORMAT_VERSION = 1
SITE_SHIFT = 36  # vpn bits: 48-bit user addresses, 4 KiB pages


class Flag(enum.IntFlag):
    PRESENT = 1  # pagemap bit 63
    ANON = 2  # not FILE
    FILE = 4  # pagemap bit 61: file page or shared anonymous
    KSM = 8  # kpageflags bit 21 (KPF_KSM)
    ZERO = 16  # content is all zero bytes
    ZERO_PFN = 32  # kpageflags bit 24: mapped to the kernel's zero page
    HINTED = 64  # inside a hinted range (set by the oracle from a hint trace)
    UNSTABLE = 128  # mapping moved, or frame became shared, while read (content may predate it)


def site_key(pid: npt.ArrayLike, vaddr: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    p = np.asarray(pid, dtype=np.uint64)
    v = np.asarray(vaddr, dtype=np.uint64)
    return (p << np.uint64(SITE_SHIFT)) | (v >> np.uint64(12))


@dataclass
class SnapshotSeries:
    times: npt.NDArray[np.float64]  # seconds since the first snapshot
    offsets: npt.NDArray[np.int64]  # T + 1
    pid: npt.NDArray[np.int32]
    vaddr: npt.NDArray[np.uint64]
    hash: npt.NDArray[np.uint64]
    flags: npt.NDArray[np.uint8]
    pfn: npt.NDArray[np.uint64]  # 0 when not readable (needs root)
    raw: npt.NDArray[np.uint8] | None = None  # (N, 4096) when kept
    meta: dict[str, Any] = field(default_factory=dict)
    # per snapshot KSM sysfs counters (pages_sharing, ...), when captured
    ksm: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        t = len(self.times)
        if len(self.offsets) != t + 1:
            raise PyksmError(f"snapshot series: {len(self.offsets)} offsets for {t} snapshots")
        n = int(self.offsets[-1]) if t else 0
        if t and (self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0)):
            raise PyksmError("snapshot series: offsets are not increasing from 0")
        for name in ("pid", "vaddr", "hash", "flags", "pfn"):
            if len(getattr(self, name)) != n:
                raise PyksmError(
                    f"snapshot series: {name} has {len(getattr(self, name))} pages, expected {n}"
                )
        if self.raw is not None and self.raw.shape != (n, 4096):
            raise PyksmError(f"snapshot series: raw pages have shape {self.raw.shape}")
        if not np.all(np.isfinite(self.times)):
            raise PyksmError("snapshot series: a snapshot time is not a finite number")
        if t > 1 and np.any(np.diff(self.times) < 0):
            raise PyksmError("snapshot series: times go backwards")

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def pages(self) -> int:
        return int(self.offsets[-1]) if self.count else 0

    def span(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def sites(self) -> npt.NDArray[np.uint64]:
        return site_key(self.pid, self.vaddr)

    def snapshot_index(self) -> npt.NDArray[np.int64]:
        """For every page, the index of the snapshot it belongs to."""
        return np.repeat(np.arange(self.count, dtype=np.int64), np.diff(self.offsets))

    @classmethod
    def build(
        cls,
        snapshots: list[dict[str, npt.ArrayLike]],
        times: npt.ArrayLike,
        meta: dict[str, Any] | None = None,
        ksm: list[dict[str, int]] | None = None,
    ) -> SnapshotSeries:
        """From per-snapshot dicts with keys pid, vaddr, hash, flags (pfn, raw optional)."""
        sizes = [len(np.asarray(s["hash"])) for s in snapshots]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

        def cat(name: str, dtype: type, default: int = 0) -> npt.NDArray[Any]:
            parts: list[npt.NDArray[Any]] = [
                np.asarray(s[name], dtype=dtype) if name in s else np.full(sz, default, dtype=dtype)
                for s, sz in zip(snapshots, sizes, strict=True)
            ]
            return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

        raw = None
        if snapshots and all("raw" in s for s in snapshots):
            raw = np.concatenate([np.asarray(s["raw"], dtype=np.uint8) for s in snapshots])
        return cls(
            times=np.asarray(times, dtype=np.float64),
            offsets=offsets,
            pid=cat("pid", np.int32),
            vaddr=cat("vaddr", np.uint64),
            hash=cat("hash", np.uint64),
            flags=cat("flags", np.uint8, int(Flag.PRESENT | Flag.ANON)),
            pfn=cat("pfn", np.uint64),
            raw=raw,
            meta=dict(meta or {}),
            ksm=list(ksm or []),
        )

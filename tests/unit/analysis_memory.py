"""Constructed memory of known content for the analysis tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pyksm.analysis.pagehash import hash_pages
from pyksm.analysis.series import Flag, SnapshotSeries

BASE = 0x7F0000000000


def pages(ids: list[int]) -> npt.NDArray[np.uint8]:
    """One page per id: id 0 is all zero, any other id a distinct content."""
    out = np.zeros((len(ids), 512), dtype=np.uint64)
    for i, v in enumerate(ids):
        if v:
            out[i] = np.uint64((v * 0x9E3779B97F4A7C15) % 2**64) ^ np.arange(512, dtype=np.uint64)
    return out.view(np.uint8).reshape(len(ids), 4096)


def snapshot(
    ids: list[int],
    pid: int = 100,
    file: list[bool] | None = None,
    ksm_pfn: dict[int, int] | None = None,
) -> dict[str, Any]:
    """Pages ``ids`` at consecutive addresses of ``pid``; id -1 = not present.

    ``ksm_pfn``: page index -> PFN of the KSM page it is mapped to.
    """
    idx = [i for i, v in enumerate(ids) if v >= 0]
    content = pages([ids[i] for i in idx])
    h, zero = hash_pages(content)
    flags = np.full(len(idx), int(Flag.PRESENT), dtype=np.uint8)
    is_file = np.array([file[i] if file else False for i in idx], dtype=bool)
    flags |= np.where(is_file, np.uint8(Flag.FILE), np.uint8(Flag.ANON))
    flags |= np.where(zero, np.uint8(Flag.ZERO), np.uint8(0))
    pfn = np.array([1000 + pid * 100 + i for i in idx], dtype=np.uint64)
    for j, i in enumerate(idx):
        if ksm_pfn and i in ksm_pfn:
            pfn[j] = ksm_pfn[i]
            flags[j] |= np.uint8(Flag.KSM)
    return {
        "pid": np.full(len(idx), pid, dtype=np.int32),
        "vaddr": np.array([BASE + 4096 * i for i in idx], dtype=np.uint64),
        "hash": h,
        "flags": flags,
        "pfn": pfn,
    }


def merge(*snaps: dict[str, Any]) -> dict[str, Any]:
    return {k: np.concatenate([s[k] for s in snaps]) for k in snaps[0]}


def series(per_snapshot: list[list[int]], times: list[float] | None = None) -> SnapshotSeries:
    times = times if times is not None else [float(i) for i in range(len(per_snapshot))]
    return SnapshotSeries.build([snapshot(ids) for ids in per_snapshot], times)

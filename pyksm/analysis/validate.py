"""Merge validation: what the kernel merged (KPF_KSM) against the oracle.

A page counts as *merged* when kpageflags marks it KPF_KSM and its PFN is mapped
at two or more of the observed sites. (Linux 6.12's /proc/kpageflags sets KPF_KSM
on every anonymous page, see ``snapshot.kpf_ksm_reliable``; requiring a shared
PFN keeps the figures right there too. Caveat: anonymous pages still shared
copy-on-write after fork() between observed processes would count as merged.)

Per snapshot:

- ``kernel_sharing``: merged pages minus their distinct PFNs, i.e. what
  ``pages_sharing`` counts for the observed processes; ``kernel_sharing_nonzero``
  the same for merged pages whose content is not all zero (the share KSM got of
  ``opportunities``, which leave zero pages out); ``kernel_sharing_file`` for
  merged pages flagged FILE (the share KSM got of ``opp_file``);
  ``kernel_sharing_file_cross`` the part of that across processes (the share
  KSM got of ``opp_file_cross``): per KSM page, the processes mapping it minus
  one, summed per content and capped at the processes holding that content
  minus one.
- ``recall`` = kernel_sharing / (opportunities + zero_opportunities).
- ``wrong``: merged pages whose content differs from the content most pages
  of their PFN show. KSM maps one physical page for all of them, so any such page
  means a torn read or a kernel bug; precision = 1 - wrong / KSM pages must be 1.
- ``changed_at_merge``: pages that became merged since the previous snapshot
  with a different content than they had there. Legitimate if the process wrote
  the page in between; for a workload with static content it must be 0.

Pages flagged UNSTABLE (their mapping changed while the snapshot read them, or
their frame became shared after its content was read, so their content may
predate their PFN) are left out of ``wrong`` and
``changed_at_merge`` (in either snapshot of the pair) and counted as ``unstable``.

Over the series (:func:`long_lived_recall`): of the opportunity episodes of
:func:`pyksm.analysis.oracle.lifetimes` that lived at least ``min_seconds``,
the share the kernel merged at some snapshot of the episode (the k-th
redundant copy of content c is merged at a snapshot when the merged pages of c
there outnumber their distinct PFNs by at least k).

Needs PFNs (pagemap as root); without them :func:`validate` raises PyksmError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from pyksm.analysis.oracle import Lifetimes, holders, lifetimes, per_snapshot
from pyksm.analysis.series import Flag, SnapshotSeries
from pyksm.errors import PyksmError

__all__ = ["LongLivedRecall", "long_lived_recall", "validate"]


def _wrong_in_pfn_groups(pfn: np.ndarray, h: np.ndarray) -> int:
    if pfn.size == 0:
        return 0
    order = np.lexsort((h, pfn))
    p, hh = pfn[order], h[order]
    # count (pfn, hash) pairs; pages outside the most common hash of their pfn are wrong
    new_pair = np.concatenate([[True], (p[1:] != p[:-1]) | (hh[1:] != hh[:-1])])
    pair_start = np.flatnonzero(new_pair)
    pair_count = np.diff(np.append(pair_start, p.size))
    pair_pfn = p[pair_start]
    new_pfn = np.concatenate([[True], pair_pfn[1:] != pair_pfn[:-1]])
    best = np.maximum.reduceat(pair_count, np.flatnonzero(new_pfn))
    total = np.add.reduceat(pair_count, np.flatnonzero(new_pfn))
    return int((total - best).sum())


def _shared_pfn(pfn: np.ndarray, ksm: np.ndarray) -> np.ndarray:
    """Which pages' PFN is mapped at two or more of these (KSM-flagged) sites."""
    out = np.zeros(pfn.size, dtype=np.bool_)
    if not ksm.any():
        return out
    kp = pfn[ksm]
    u, counts = np.unique(kp, return_counts=True)
    out[ksm] = counts[np.searchsorted(u, kp)] >= 2
    return out


def _check_pfns(series: SnapshotSeries) -> npt.NDArray[np.bool_]:
    """Pages kpageflags marks KSM; an error when such pages have no PFN."""
    ksm_any: npt.NDArray[np.bool_] = (series.flags & Flag.KSM) != 0
    if np.any(ksm_any & (series.pfn == 0)):
        raise PyksmError(
            "KSM pages without PFNs in the snapshots: capture them as root to validate merges"
        )
    return ksm_any


def _sharing(pfn: np.ndarray) -> int:
    """Pages minus distinct PFNs: what pages_sharing counts for them."""
    return int(pfn.size - np.unique(pfn).size)


def _cross_sharing(
    pfn: npt.NDArray[np.uint64],
    pid: npt.NDArray[np.int32],
    h: npt.NDArray[np.uint64],
    merged: npt.NDArray[np.bool_],
) -> int:
    """Sharing across processes among the ``merged`` pages (of the pages
    ``pfn``, ``pid``, ``h``, which hold every present copy of their contents)."""
    if not merged.any():
        return 0
    mp, mpid, mh = pfn[merged], pid[merged].astype(np.uint64), h[merged]
    first = np.unique(mp, return_index=True)[1]  # first page of each PFN, by PFN
    pfn_pid = np.unique(np.stack([mp, mpid]), axis=1)
    procs = np.unique(pfn_pid[0], return_counts=True)[1]  # per PFN, the same order
    content, inv = np.unique(mh[first], return_inverse=True)
    per_content = np.bincount(inv, weights=procs - 1).astype(np.int64)
    hc, hn = holders(h, pid)
    cap = hn[np.searchsorted(hc, content)] - 1
    return int(np.minimum(per_content, cap).sum())


def validate(series: SnapshotSeries) -> list[dict[str, float]]:
    """One row per snapshot: oracle figures plus kernel_sharing, recall, precision."""
    ksm_any = _check_pfns(series)
    rows = per_snapshot(series)
    sites = series.sites()
    prev_sites = np.empty(0, np.uint64)
    prev_hash = np.empty(0, np.uint64)
    prev_ksm = np.empty(0, np.bool_)
    prev_steady = np.empty(0, np.bool_)
    for i, row in enumerate(rows):
        sl = series.span(i)
        pfn, h, s, pid = series.pfn[sl], series.hash[sl], sites[sl], series.pid[sl]
        ksm = ksm_any[sl] & _shared_pfn(pfn, ksm_any[sl])
        kp = pfn[ksm]
        n_ksm = int(kp.size)
        kernel_sharing = _sharing(kp)
        nonzero = (series.flags[sl] & Flag.ZERO) == 0
        is_file = (series.flags[sl] & Flag.FILE) != 0
        disk = nonzero & is_file
        steady = (series.flags[sl] & Flag.UNSTABLE) == 0
        checked = ksm & steady
        wrong = _wrong_in_pfn_groups(pfn[checked], h[checked])
        changed = 0
        if prev_sites.size:
            order = np.argsort(prev_sites)
            ps = prev_sites[order]
            j = np.searchsorted(ps, s)
            j_ok = np.minimum(j, ps.size - 1)
            found = (j < ps.size) & (ps[j_ok] == s)
            src = order[j_ok]
            newly = checked & found & ~prev_ksm[src] & prev_steady[src]
            changed = int(np.count_nonzero(newly & (prev_hash[src] != h)))
        possible = row["opportunities"] + row["zero_opportunities"]
        row.update(
            kernel_sharing=kernel_sharing,
            kernel_sharing_nonzero=_sharing(pfn[ksm & nonzero]),
            kernel_sharing_file=_sharing(pfn[ksm & disk]),
            kernel_sharing_file_cross=_cross_sharing(pfn[disk], pid[disk], h[disk], ksm[disk]),
            recall=kernel_sharing / possible if possible else 1.0,
            ksm_pages=n_ksm,
            checked=int(checked.sum()),
            wrong=wrong,
            precision=1.0 - wrong / int(checked.sum()) if checked.any() else 1.0,
            changed_at_merge=changed,
            unstable=int(np.count_nonzero(~steady)),
        )
        if series.ksm and i < len(series.ksm):
            row["sysfs_pages_sharing"] = series.ksm[i].get("pages_sharing", -1)
        prev_sites, prev_hash, prev_ksm, prev_steady = s, h, ksm, steady
    return rows


@dataclass(frozen=True)
class LongLivedRecall:
    """Of the episodes that lived at least ``min_seconds``, how many got merged."""

    min_seconds: float
    episodes: int  # every opportunity episode of the series
    long_lived: int  # of them lived >= min_seconds (as observed)
    merged: int  # of those, merged at some snapshot of the episode

    @property
    def recall(self) -> float | None:
        return self.merged / self.long_lived if self.long_lived else None


def _merged_by_content(
    series: SnapshotSeries, ksm_any: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(hash, snapshot, merged sharing) of every non-zero content the kernel
    merged in some snapshot, sorted by (hash, snapshot)."""
    hs, ts, vs = [], [], []
    for i in range(series.count):
        sl = series.span(i)
        pfn, h = series.pfn[sl], series.hash[sl]
        nonzero = (series.flags[sl] & Flag.ZERO) == 0
        sel = ksm_any[sl] & _shared_pfn(pfn, ksm_any[sl]) & nonzero
        mh, mp = h[sel], pfn[sel]
        if not mh.size:
            continue
        u, pages = np.unique(mh, return_counts=True)
        pairs = np.unique(np.stack([mh, mp]), axis=1)
        pu, frames = np.unique(pairs[0], return_counts=True)
        assert np.array_equal(u, pu)
        hs.append(u)
        ts.append(np.full(u.size, i, dtype=np.int64))
        vs.append((pages - frames).astype(np.int64))
    if not hs:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    h, t, v = np.concatenate(hs), np.concatenate(ts), np.concatenate(vs)
    order = np.lexsort((t, h))
    return h[order], t[order], v[order]


@numba.njit(cache=True)
def _reached(
    snap: npt.NDArray[np.int64],
    sharing: npt.NDArray[np.int64],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    first: npt.NDArray[np.int64],
    last: npt.NDArray[np.int64],
    level: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """Episode j is merged when a record in lo[j]:hi[j] (its content) lies in
    [first[j], last[j]] with sharing >= level[j]."""
    out = np.zeros(lo.size, dtype=np.bool_)
    for j in range(lo.size):
        for r in range(lo[j], hi[j]):
            if first[j] <= snap[r] <= last[j] and sharing[r] >= level[j]:
                out[j] = True
                break
    return out


def long_lived_recall(
    series: SnapshotSeries, min_seconds: float, episodes: Lifetimes | None = None
) -> LongLivedRecall:
    """The share of the long-lived opportunity episodes the kernel merged."""
    ksm_any = _check_pfns(series)
    lt = episodes if episodes is not None else lifetimes(series)
    long = np.flatnonzero(lt.seconds >= min_seconds)
    if not long.size:
        return LongLivedRecall(min_seconds, len(lt), 0, 0)
    h, t, v = _merged_by_content(series, ksm_any)
    eh = lt.hash[long]
    lo = np.searchsorted(h, eh, side="left").astype(np.int64)
    hi = np.searchsorted(h, eh, side="right").astype(np.int64)
    hit = _reached(t, v, lo, hi, lt.first[long], lt.last[long], lt.level[long])
    return LongLivedRecall(min_seconds, len(lt), int(long.size), int(np.count_nonzero(hit)))

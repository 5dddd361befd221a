"""Merge validation: what the kernel merged (KPF_KSM) against the oracle.

A page counts as *merged* when kpageflags marks it KPF_KSM and its PFN is mapped
at two or more of the observed sites. (Linux 6.12's /proc/kpageflags sets KPF_KSM
on every anonymous page, see ``snapshot.kpf_ksm_reliable``; requiring a shared
PFN keeps the figures right there too. Caveat: anonymous pages still shared
copy-on-write after fork() between observed processes would count as merged.)

Per snapshot:

- ``kernel_sharing``: merged pages minus their distinct PFNs, i.e. what
  ``pages_sharing`` counts for the observed processes.
- ``recall`` = kernel_sharing / (opportunities + zero_opportunities).
- ``wrong``: merged pages whose content differs from the content most pages
  of their PFN show. KSM maps one physical page for all of them, so any such page
  means a torn read or a kernel bug; precision = 1 - wrong / KSM pages must be 1.
- ``changed_at_merge``: pages that became merged since the previous snapshot
  with a different content than they had there. Legitimate if the process wrote
  the page in between; for a workload with static content it must be 0.

Pages flagged UNSTABLE (their mapping changed while the snapshot read them, so
their content may predate their PFN) are left out of ``wrong`` and
``changed_at_merge`` (in either snapshot of the pair) and counted as ``unstable``.

Needs PFNs (pagemap as root); without them :func:`validate` raises PyksmError.
"""

from __future__ import annotations

import numpy as np

from pyksm.analysis.oracle import per_snapshot
from pyksm.analysis.series import Flag, SnapshotSeries
from pyksm.errors import PyksmError

__all__ = ["validate"]


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


def validate(series: SnapshotSeries) -> list[dict[str, float]]:
    """One row per snapshot: oracle figures plus kernel_sharing, recall, precision."""
    ksm_any = (series.flags & Flag.KSM) != 0
    if np.any(ksm_any & (series.pfn == 0)):
        raise PyksmError(
            "KSM pages without PFNs in the snapshots: capture them as root to validate merges"
        )
    rows = per_snapshot(series)
    sites = series.sites()
    prev_sites = np.empty(0, np.uint64)
    prev_hash = np.empty(0, np.uint64)
    prev_ksm = np.empty(0, np.bool_)
    prev_steady = np.empty(0, np.bool_)
    for i, row in enumerate(rows):
        sl = series.span(i)
        pfn, h, s = series.pfn[sl], series.hash[sl], sites[sl]
        ksm = ksm_any[sl] & _shared_pfn(pfn, ksm_any[sl])
        kp = pfn[ksm]
        n_ksm = int(kp.size)
        kernel_sharing = n_ksm - int(np.unique(kp).size)
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
            recall=kernel_sharing / possible if possible else 1.0,
            ksm_pages=n_ksm,
            wrong=wrong,
            precision=1.0 - wrong / int(checked.sum()) if checked.any() else 1.0,
            changed_at_merge=changed,
            unstable=int(np.count_nonzero(~steady)),
        )
        if series.ksm and i < len(series.ksm):
            row["sysfs_pages_sharing"] = series.ksm[i].get("pages_sharing", -1)
        prev_sites, prev_hash, prev_ksm, prev_steady = s, h, ksm, steady
    return rows

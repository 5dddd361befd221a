"""Duplicate grouping of one snapshot: how many pages could be merged.

For the pages present in one snapshot, pages with equal content hashes form a
group. A group of n pages can be backed by one physical page, so it offers
n - 1 *opportunities* (what KSM's ``pages_sharing`` counts once merged):

    opportunities = present non-zero pages - distinct non-zero contents

All-zero pages are counted on their own (``zero_pages``; they form one group
with ``zero_pages - 1`` opportunities, which KSM takes only with
``use_zero_pages=0`` or as ``ksm_zero_pages``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DupStats", "group_counts", "group_stats"]


@dataclass(frozen=True)
class DupStats:
    present: int  # pages present (zero pages included)
    zero_pages: int  # of them all-zero
    distinct: int  # distinct non-zero contents
    dup_pages: int  # non-zero pages whose content occurs at least twice
    opportunities: int  # present non-zero - distinct non-zero
    zero_opportunities: int  # zero_pages - 1 (0 when none)

    @property
    def total_opportunities(self) -> int:
        return self.opportunities + self.zero_opportunities

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def group_counts(
    hashes: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """(distinct hashes sorted, how many pages hold each)."""
    if hashes.size == 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    s = np.sort(hashes, kind="stable")
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    counts = np.diff(np.append(starts, s.size)).astype(np.int64)
    return s[starts], counts


def group_stats(hashes: npt.NDArray[np.uint64], zero: npt.NDArray[np.bool_]) -> DupStats:
    """Grouping figures of one snapshot (``zero``: the all-zero pages)."""
    nz = hashes[~zero]
    _, counts = group_counts(nz)
    nzero = int(np.count_nonzero(zero))
    return DupStats(
        present=int(hashes.size),
        zero_pages=nzero,
        distinct=int(counts.size),
        dup_pages=int(counts[counts > 1].sum()),
        opportunities=int(nz.size - counts.size),
        zero_opportunities=max(nzero - 1, 0),
    )

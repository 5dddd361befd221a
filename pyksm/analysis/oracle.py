"""The sharing oracle: every merge that was possible, per snapshot and over time.

Per snapshot (:func:`per_snapshot`): the grouping figures of
:mod:`pyksm.analysis.dedup`, split by category. A group of n pages has one
*anchor* (the page that would stay) and n - 1 opportunities; the anchor is the
group's first page in the order (anonymous before file, unhinted before
hinted, then site), so the split per category is exact and sums to the total.
``opp_file_cross`` is the part of ``opp_file`` across processes: per content,
the processes holding it minus one (the rest are copies within one process,
e.g. a guest's own copy of a block in its page cache, which no read on the
host saw).

Lifetimes (:func:`lifetimes`): an opportunity is "the k-th redundant copy of
content c" (k = 1 .. n_c - 1). It is alive in a snapshot when that snapshot
holds at least k + 1 pages of c, so the opportunities alive at a snapshot are
exactly that snapshot's opportunity count. An episode is a maximal run of
consecutive snapshots in which one opportunity is alive; its lifetime is
``time[last] - time[first]`` (seen once: 0, i.e. shorter than the interval).
Episodes touching the first or last snapshot are censored (they may be longer).
Zero pages are left out of lifetimes (they are counted apart).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numba
import numpy as np
import numpy.typing as npt

from pyksm.analysis.dedup import group_counts, group_stats
from pyksm.analysis.hinttrace import HintTrace
from pyksm.analysis.series import Flag, SnapshotSeries

__all__ = [
    "FINE_BINS",
    "SEED_BINS",
    "Lifetimes",
    "cross_process_excess",
    "histogram",
    "holders",
    "lifetimes",
    "mark_hinted",
    "per_snapshot",
]

# The seed's bins (seconds): < 1 s, 1-30 s, > 30 s; and finer ones.
SEED_BINS: tuple[tuple[str, float, float], ...] = (
    ("<1s", 0.0, 1.0),
    ("1-30s", 1.0, 30.0 + 1e-9),
    (">30s", 30.0 + 1e-9, np.inf),
)
FINE_EDGES = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, np.inf)
FINE_BINS = tuple(
    (f"{lo:g}-{hi:g}s" if np.isfinite(hi) else f">{lo:g}s", lo, hi)
    for lo, hi in itertools.pairwise(FINE_EDGES)
)


def mark_hinted(series: SnapshotSeries, hints: HintTrace) -> None:
    """Set Flag.HINTED on pages inside a range hinted up to their snapshot's time."""
    if len(hints) == 0:
        return
    sites = series.sites()
    flags = series.flags
    flags &= np.uint8(~Flag.HINTED & 0xFF)
    for i in range(series.count):
        sl = series.span(i)
        hit = hints.covered(sites[sl], until=float(series.times[i]))
        flags[sl][hit] |= np.uint8(Flag.HINTED)


def holders(
    h: npt.NDArray[np.uint64], pid: npt.ArrayLike
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """(sorted distinct contents of ``h``, how many processes hold each)."""
    pairs = np.unique(np.stack([h.astype(np.uint64), np.asarray(pid).astype(np.uint64)]), axis=1)
    content, procs = np.unique(pairs[0], return_counts=True)
    return content, procs.astype(np.int64)


def cross_process_excess(h: npt.NDArray[np.uint64], pid: npt.ArrayLike) -> int:
    """Sum over contents of (processes holding it - 1): the opportunities a
    page of one process can find only in another's memory."""
    if not h.size:
        return 0
    return int((holders(h, pid)[1] - 1).sum())


def per_snapshot(series: SnapshotSeries) -> list[dict[str, float]]:
    """One row per snapshot: time, grouping figures, opportunities by category."""
    rows: list[dict[str, float]] = []
    sites = series.sites()
    for i in range(series.count):
        sl = series.span(i)
        h, f = series.hash[sl], series.flags[sl]
        zero = (f & Flag.ZERO) != 0
        st = group_stats(h, zero)
        row: dict[str, float] = {"time": float(series.times[i]), **st.as_dict()}
        nz = ~zero
        hz, fz, sz = h[nz], f[nz], sites[sl][nz]
        is_file = (fz & Flag.FILE) != 0
        hinted = (fz & Flag.HINTED) != 0
        order = np.lexsort((sz, hinted, is_file, hz))
        hs = hz[order]
        redundant = np.concatenate([[False], hs[1:] == hs[:-1]]) if hs.size else hs.astype(bool)
        row["opp_anon"] = int(np.count_nonzero(redundant & ~is_file[order]))
        row["opp_file"] = int(np.count_nonzero(redundant & is_file[order]))
        row["opp_hinted"] = int(np.count_nonzero(redundant & hinted[order]))
        row["opp_file_cross"] = cross_process_excess(hz[is_file], series.pid[sl][nz][is_file])
        row["ksm_pages"] = int(np.count_nonzero(f & Flag.KSM))
        rows.append(row)
    return rows


@numba.njit(cache=True)
def _episodes(
    hashes: npt.NDArray[np.uint64],
    snap: npt.NDArray[np.int64],
    excess: npt.NDArray[np.int64],
    max_excess: int,
    out_first: npt.NDArray[np.int64],
    out_last: npt.NDArray[np.int64],
    out_rec: npt.NDArray[np.int64],
    out_level: npt.NDArray[np.int64],
) -> int:
    """Records sorted by (hash, snapshot); excess = copies - 1 (>= 1).
    Per episode: first and last snapshot, the record it opened at (its hash)
    and its level k (the k-th redundant copy)."""
    start = np.empty(max_excess + 1, dtype=np.int64)
    opened = np.empty(max_excess + 1, dtype=np.int64)
    n = 0
    prev_h = np.uint64(0)
    prev_t = -2
    prev_e = 0
    for r in range(hashes.size):
        h = hashes[r]
        t = snap[r]
        e = excess[r]
        if r == 0 or h != prev_h or t != prev_t + 1:
            for k in range(1, prev_e + 1):  # close every level at prev_t
                out_first[n] = start[k]
                out_last[n] = prev_t
                out_rec[n] = opened[k]
                out_level[n] = k
                n += 1
            prev_e = 0
        if e > prev_e:
            for k in range(prev_e + 1, e + 1):
                start[k] = t
                opened[k] = r
        else:
            for k in range(e + 1, prev_e + 1):
                out_first[n] = start[k]
                out_last[n] = prev_t
                out_rec[n] = opened[k]
                out_level[n] = k
                n += 1
        prev_h = h
        prev_t = t
        prev_e = e
    for k in range(1, prev_e + 1):
        out_first[n] = start[k]
        out_last[n] = prev_t
        out_rec[n] = opened[k]
        out_level[n] = k
        n += 1
    return n


@dataclass
class Lifetimes:
    """One row per opportunity episode (indices into the series' snapshots)."""

    first: npt.NDArray[np.int64]
    last: npt.NDArray[np.int64]
    seconds: npt.NDArray[np.float64]
    censored: npt.NDArray[np.bool_]  # touches the first or the last snapshot
    # the content (hash) and the level k (k-th redundant copy) of each episode
    hash: npt.NDArray[np.uint64] = field(default_factory=lambda: np.empty(0, np.uint64))
    level: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.first)


def lifetimes(series: SnapshotSeries) -> Lifetimes:
    """Every opportunity episode of the series (non-zero content)."""
    hs, ts, es = [], [], []
    for i in range(series.count):
        sl = series.span(i)
        nz = (series.flags[sl] & Flag.ZERO) == 0
        u, c = group_counts(series.hash[sl][nz])
        keep = c > 1
        hs.append(u[keep])
        es.append(c[keep] - 1)
        ts.append(np.full(int(keep.sum()), i, dtype=np.int64))
    h = np.concatenate(hs) if hs else np.empty(0, np.uint64)
    t = np.concatenate(ts) if ts else np.empty(0, np.int64)
    e = np.concatenate(es) if es else np.empty(0, np.int64)
    order = np.lexsort((t, h))
    h, t, e = h[order], t[order], e[order]
    total = int(e.sum())
    first = np.empty(total, dtype=np.int64)
    last = np.empty(total, dtype=np.int64)
    rec = np.empty(total, dtype=np.int64)
    level = np.empty(total, dtype=np.int64)
    n = _episodes(h, t, e, int(e.max()) if e.size else 0, first, last, rec, level) if total else 0
    first, last, rec, level = first[:n], last[:n], rec[:n], level[:n]
    times = series.times
    return Lifetimes(
        first=first,
        last=last,
        seconds=times[last] - times[first],
        censored=(first == 0) | (last == series.count - 1),
        hash=h[rec],
        level=level,
    )


def histogram(
    lt: Lifetimes,
    bins: tuple[tuple[str, float, float], ...] = SEED_BINS,
    include_censored: bool = True,
) -> dict[str, int]:
    """Episodes per lifetime bin ([lo, hi) seconds)."""
    sec = lt.seconds if include_censored else lt.seconds[~lt.censored]
    return {name: int(np.count_nonzero((sec >= lo) & (sec < hi))) for name, lo, hi in bins}

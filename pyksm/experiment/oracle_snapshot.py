"""The oracle of real QEMU guests, from snapshots of their RAM.

Real guests have no content ledger (``oracle_ledger.py``): every
``interval`` seconds a thread snapshots the guests' mergeable memory
(:func:`pyksm.analysis.snapshot.snapshot_once`: pagemap, /proc/PID/mem,
kpageflags, hashed with pyksm.analysis.pagehash) and the analysis core turns
the snapshots into figures:

- opportunities: present non-zero pages minus distinct non-zero contents (as
  ``pages_sharing`` counts, :mod:`pyksm.analysis.dedup`); ``file`` the part
  whose content is a block of the guests' shared disk (the guests' page
  cache; the disk's block hashes are marked :attr:`Flag.FILE` in the
  series, since all guest RAM is anonymous memory to the host);
- kernel sharing among the guests: merged non-zero pages minus their PFNs
  (:func:`pyksm.analysis.validate.validate`, ``kernel_sharing_nonzero``);
  captured sharing is then ∫ kernel sharing dt / ∫ opportunities dt, as the
  ledger scenarios' ∫ pages_sharing dt / ∫ oracle dt. The guests booted the
  same kernel and initramfs, so part of both is boot content that linear
  KSM merges in the warm-up already; ``file_sharing`` / ``file`` is the part
  the workload's reads created (disk blocks); ``file_cross`` /
  ``file_cross_sharing`` the part of those across guests (per block, the
  guests holding it minus one): what hints can reach. The rest are copies of
  a block within one guest (a reader's buffer beside the page cache, or a
  freed frame that still holds one), made where no host read path sees them;
- precision (merged pages whose content disagrees with their PFN's: must be
  none) and the recall of long-lived opportunities
  (:func:`pyksm.analysis.validate.long_lived_recall`);
- lifetimes (:func:`pyksm.analysis.oracle.lifetimes`), binned as the
  ledger oracle bins them, so the report draws both alike.

The figures between two snapshots are the last snapshot's: a 1 s sample
holds them. The time each snapshot took is kept (its cost under TCG).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pyksm.analysis import oracle, validate
from pyksm.analysis.pagehash import hash_file, hash_pages
from pyksm.analysis.series import Flag, SnapshotSeries
from pyksm.analysis.snapshot import snapshot_once
from pyksm.errors import PyksmError
from pyksm.experiment.oracle_ledger import LIFETIME_EDGES

__all__ = [
    "SnapshotFigures",
    "SnapshotOracle",
    "disk_hashes",
    "figures",
    "lifetime_histogram",
    "mark_disk",
    "prepare",
    "validation",
]

# The oracle's cost is bounded: after a snapshot it pauses at least as long
# as the snapshot took (and MIN_PAUSE_S), so it never takes more than half of
# one CPU, also under nested TCG where one snapshot of two guests takes many
# seconds (the interval stretches then; the figures keep each snapshot's time).
MAX_DUTY = 0.5
MIN_PAUSE_S = 1.0


def pause_after(took: float, interval: float) -> float:
    """Seconds to wait after a snapshot that took ``took`` seconds."""
    return max(interval - took, took * (1 - MAX_DUTY) / MAX_DUTY, MIN_PAUSE_S)


def disk_hashes(disk: Path) -> npt.NDArray[np.uint64]:
    """Sorted distinct hashes of the disk's non-zero 4 KiB blocks."""
    h, zero = hash_file(disk)
    out: npt.NDArray[np.uint64] = np.unique(h[~zero])
    return out


def mark_disk(flags: npt.NDArray[np.uint8], hashes: npt.NDArray[np.uint64], disk: Any) -> None:
    """Flag.FILE on (non-zero) pages whose content is a disk block, ANON on the others."""
    is_disk = np.isin(hashes, disk) & ((flags & Flag.ZERO) == 0)
    flags &= np.uint8(0xFF & ~(Flag.FILE | Flag.ANON))
    flags |= np.where(is_disk, np.uint8(Flag.FILE), np.uint8(Flag.ANON))


def prepare() -> float:
    """Compile the analysis' numba functions (cached on disk when it can be)
    on a tiny series, so that a run's first snapshot and its end are not
    charged for it (a minute under TCG). Returns seconds."""
    start = time.monotonic()
    page = np.arange(512, dtype=np.uint64)
    h = np.repeat(hash_pages(page)[0], 2)
    snap: dict[str, npt.ArrayLike] = {
        "pid": np.array([1, 2], dtype=np.int32),
        "vaddr": np.array([4096, 4096], dtype=np.uint64),
        "hash": h,
        "flags": np.full(2, int(Flag.PRESENT | Flag.ANON | Flag.KSM), dtype=np.uint8),
        "pfn": np.array([7, 7], dtype=np.uint64),
    }
    series = SnapshotSeries.build([snap, snap], [0.0, 1.0])
    validation(series, figures(series), 0.5)
    return time.monotonic() - start


@dataclass(frozen=True)
class SnapshotFigures:
    """One snapshot's figures (t: seconds since the measured run started)."""

    t: float
    present: int
    opportunities: int
    file: int
    anon: int
    zero_pages: int
    kernel_sharing: int  # merged non-zero pages among the guests minus their PFNs
    file_sharing: int  # the same for pages holding a disk block (I/O-born)
    file_cross: int  # disk-block opportunities across guests (of ``file``)
    file_cross_sharing: int  # kernel sharing across guests among disk-block pages
    ksm_pages: int
    checked: int  # merged pages whose content was compared (not UNSTABLE)
    wrong: int
    unstable: int
    seconds: float  # how long the snapshot took


def figures(series: SnapshotSeries, seconds: list[float] | None = None) -> list[SnapshotFigures]:
    """Per snapshot of ``series`` (disk blocks already marked FILE)."""
    rows = validate.validate(series)
    took = seconds or [0.0] * len(rows)
    return [
        SnapshotFigures(
            t=float(r["time"]),
            present=int(r["present"]),
            opportunities=int(r["opportunities"]),
            file=int(r["opp_file"]),
            anon=int(r["opp_anon"]),
            zero_pages=int(r["zero_pages"]),
            kernel_sharing=int(r["kernel_sharing_nonzero"]),
            file_sharing=int(r["kernel_sharing_file"]),
            file_cross=int(r["opp_file_cross"]),
            file_cross_sharing=int(r["kernel_sharing_file_cross"]),
            ksm_pages=int(r["ksm_pages"]),
            checked=int(r["checked"]),
            wrong=int(r["wrong"]),
            unstable=int(r["unstable"]),
            seconds=round(s, 3),
        )
        for r, s in zip(rows, took, strict=True)
    ]


def lifetime_histogram(lt: oracle.Lifetimes, count: int) -> dict[str, object]:
    """The ledger oracle's histogram: ended episodes, and those open at the
    last of ``count`` snapshots (right-censored)."""
    edges = np.asarray(LIFETIME_EDGES)
    open_ = lt.last == count - 1
    return {
        "edges_s": list(LIFETIME_EDGES),
        "ended": np.histogram(lt.seconds[~open_], bins=edges)[0].tolist(),
        "open_at_end": np.histogram(lt.seconds[open_], bins=edges)[0].tolist(),
    }


def validation(
    series: SnapshotSeries,
    rows: list[SnapshotFigures],
    long_lived_s: float,
    lt: oracle.Lifetimes | None = None,
) -> dict[str, Any]:
    """What the summary records about the merges: precision over all
    snapshots (1.0 when nothing was merged), recall of long-lived episodes."""
    lt = lt if lt is not None else oracle.lifetimes(series)
    rec = validate.long_lived_recall(series, long_lived_s, lt)
    checked = sum(r.checked for r in rows)
    wrong = sum(r.wrong for r in rows)
    took = [r.seconds for r in rows]
    return {
        "oracle": "snapshot",
        "snapshots": len(rows),
        "snapshot_seconds_mean": round(float(np.mean(took)), 3) if took else None,
        "snapshot_seconds_max": round(max(took), 3) if took else None,
        "merged_pages_checked": checked,
        "wrong": wrong,
        "precision": 1.0 - wrong / checked if checked else 1.0,
        "long_lived_s": long_lived_s,
        "episodes": rec.episodes,
        "long_lived": rec.long_lived,
        "long_lived_merged": rec.merged,
        "long_lived_recall": rec.recall,
        "peak_opportunities": max((r.opportunities for r in rows), default=0),
        "peak_kernel_sharing": max((r.kernel_sharing for r in rows), default=0),
        "peak_file_opportunities": max((r.file for r in rows), default=0),
        "peak_file_sharing": max((r.file_sharing for r in rows), default=0),
        "peak_file_cross_opportunities": max((r.file_cross for r in rows), default=0),
    }


@dataclass
class SnapshotOracle:
    """Snapshots ``pids`` every ``interval`` s on a thread, from :meth:`start`
    to :meth:`stop`; :attr:`latest` is the last snapshot's figures."""

    pids: list[int]
    interval: float
    disk: npt.NDArray[np.uint64]
    t0: float = 0.0  # monotonic time the figures' t counts from
    latest: SnapshotFigures | None = None
    error: BaseException | None = None
    _snaps: list[dict[str, npt.NDArray[Any]]] = field(default_factory=list)
    _times: list[float] = field(default_factory=list)
    _rows: list[SnapshotFigures] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def snap(self) -> SnapshotFigures:
        """Take one snapshot now (also what the thread does)."""
        start = time.monotonic()
        s = snapshot_once(self.pids, "mergeable")
        mark_disk(s["flags"], s["hash"], self.disk)
        took = time.monotonic() - start
        one = SnapshotSeries.build([dict(s)], [start - self.t0])
        row = figures(one, [took])[0]
        self._snaps.append(s)
        self._times.append(start - self.t0)
        self._rows.append(row)
        self.latest = row
        return row

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                row = self.snap()
                self._stop.wait(pause_after(row.seconds, self.interval))
        except BaseException as e:  # reported by stop(), not lost in the thread
            self.error = e

    def start(self, t0: float) -> None:
        if self.interval <= 0:
            raise PyksmError(f"snapshot interval {self.interval:g} s: must be positive")
        self.t0 = t0
        self._thread = threading.Thread(target=self._loop, name="snapshot-oracle", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise what the thread died of, if it did."""
        if self.error is not None:
            e, self.error = self.error, None
            raise PyksmError(f"snapshot oracle failed: {e}") from None

    def stop(self, timeout: float = 300) -> None:
        """Stop after the snapshot under way (within ``timeout`` s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PyksmError(f"snapshot oracle: a snapshot took more than {timeout:g} s")
            self._thread = None

    @property
    def rows(self) -> list[SnapshotFigures]:
        return list(self._rows)

    def series(self) -> SnapshotSeries:
        return SnapshotSeries.build(
            [dict(s) for s in self._snaps], self._times, meta={"pids": self.pids}
        )

    def finish(self, long_lived_s: float) -> tuple[dict[str, object], dict[str, Any]]:
        """(lifetime histogram, validation) over every snapshot taken."""
        series = self.series()
        lt = oracle.lifetimes(series)
        rows = self.rows
        doc = validation(series, rows, long_lived_s, lt)
        doc["per_snapshot"] = [asdict(r) for r in rows]
        return lifetime_histogram(lt, series.count), doc

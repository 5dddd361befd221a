"""Hint traces as the analysis reads them: (time, pid, start, len) per hint.

Times are seconds on the snapshot series' clock (0 = first snapshot). The
collector's trace files (``pyksm.collect.tracefile``, CLOCK_MONOTONIC ns) are
recognised by their magic and shifted by ``t0`` (the series' first snapshot in
CLOCK_MONOTONIC seconds, ``meta["t0_monotonic"]``). :func:`load` also accepts NPZ
(arrays ``time``, ``pid``, ``start``, ``len``), JSON lines
(``{"time": .., "pid": .., "start": .., "len": ..}``) and whitespace text
(``TIME PID START LEN``, START may be 0x-prefixed); further formats register
in ``LOADERS`` by file suffix.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pyksm.collect.tracefile import MAGIC, read_trace
from pyksm.errors import PyksmError

__all__ = ["LOADERS", "HintTrace", "load"]


@dataclass
class HintTrace:
    time: npt.NDArray[np.float64]
    pid: npt.NDArray[np.int32]
    start: npt.NDArray[np.uint64]
    len: npt.NDArray[np.uint64]

    def __post_init__(self) -> None:
        n = len(self.time)
        if not len(self.pid) == len(self.start) == len(self.len) == n:
            raise PyksmError("hint trace: time, pid, start and len differ in length")
        order = np.argsort(self.time, kind="stable")
        if np.any(order != np.arange(n)):
            self.time, self.pid = self.time[order], self.pid[order]
            self.start, self.len = self.start[order], self.len[order]

    @classmethod
    def empty(cls) -> HintTrace:
        return cls.from_records([])

    @classmethod
    def from_records(cls, records: Iterable[tuple[float, int, int, int]]) -> HintTrace:
        rows = list(records)
        return cls(
            time=np.array([r[0] for r in rows], dtype=np.float64),
            pid=np.array([r[1] for r in rows], dtype=np.int32),
            start=np.array([r[2] for r in rows], dtype=np.uint64),
            len=np.array([r[3] for r in rows], dtype=np.uint64),
        )

    def __len__(self) -> int:
        return len(self.time)

    def shifted(self, seconds: float) -> HintTrace:
        """The same hints with ``seconds`` added to every time."""
        return HintTrace(self.time + seconds, self.pid, self.start, self.len)

    def page_ranges(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """Site keys [first, last) each hint covers (widened to page bounds)."""
        from pyksm.analysis.series import site_key

        end = self.start + self.len + np.uint64(4095)
        return site_key(self.pid, self.start), site_key(self.pid, end)

    def covered(
        self, sites: npt.NDArray[np.uint64], until: float = np.inf
    ) -> npt.NDArray[np.bool_]:
        """Which sites lie in a range hinted at or before ``until``."""
        sel = self.time <= until
        lo, hi = self.page_ranges()
        lo, hi = lo[sel], hi[sel]
        if lo.size == 0:
            return np.zeros(sites.shape, dtype=np.bool_)
        # merge overlapping ranges, then one binary search per site
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        run_hi = np.maximum.accumulate(hi)
        new = np.concatenate([[True], lo[1:] > run_hi[:-1]])
        starts = lo[new]
        ends = np.maximum.reduceat(run_hi, np.flatnonzero(new))
        i = np.searchsorted(starts, sites, side="right") - 1
        ok = i >= 0
        out = np.zeros(sites.shape, dtype=np.bool_)
        out[ok] = sites[ok] < ends[i[ok]]
        return out


_PID_MAX = 2**31 - 1  # the arrays' int32
_U64 = 2**64


def _load_npz(path: Path) -> HintTrace:
    try:
        with np.load(path) as z:
            raw = {k: z[k] for k in ("time", "pid", "start", "len")}
            for k, a in raw.items():
                if a.ndim != 1 or a.dtype.kind not in "iuf":
                    raise PyksmError(
                        f"{path}: array {k} is {a.dtype} of shape {a.shape}, expected 1-D numbers"
                    )
            time = raw["time"].astype(np.float64)
            if not np.all(np.isfinite(time)):
                raise PyksmError(f"{path}: a hint time is not a finite number")
            # Before the casts below, which would wrap them silently.
            if np.any(raw["pid"] <= 0) or np.any(raw["pid"] > _PID_MAX):
                raise PyksmError(f"{path}: a pid is not a process id")
            if np.any(raw["start"] < 0) or np.any(raw["len"] < 0):
                raise PyksmError(f"{path}: a start or len is negative")
            return HintTrace(
                time=time,
                pid=raw["pid"].astype(np.int32),
                start=raw["start"].astype(np.uint64),
                len=raw["len"].astype(np.uint64),
            )
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, TypeError) as e:
        raise PyksmError(f"{path}: not a readable hint trace ({e})") from None
    except KeyError as e:
        raise PyksmError(f"{path}: hint trace lacks array {e}") from None


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PyksmError(f"{path}: not a readable hint trace ({e})") from None


def _record(where: str, t: float, pid: int, start: int, length: int) -> tuple[float, int, int, int]:
    """One hint, if the arrays can hold it (else a one-line error naming the line)."""
    if not math.isfinite(t):
        raise PyksmError(f"{where}: hint time {t} is not a finite number")
    if not 0 < pid <= _PID_MAX:
        raise PyksmError(f"{where}: pid {pid} is not a process id")
    for name, v in (("start", start), ("len", length)):
        if not 0 <= v < _U64:
            raise PyksmError(f"{where}: {name} {v} is not 0..2^64-1")
    return t, pid, start, length


def _load_jsonl(path: Path) -> HintTrace:
    rows = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            rec = (float(d["time"]), int(d["pid"]), int(d["start"]), int(d["len"]))
        except (ValueError, KeyError, TypeError, OverflowError) as e:
            raise PyksmError(f"{path}:{n}: bad hint record ({e})") from None
        rows.append(_record(f"{path}:{n}", *rec))
    return HintTrace.from_records(rows)


def _load_text(path: Path) -> HintTrace:
    rows = []
    for n, line in enumerate(_lines(path), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        try:
            t, pid, start, length = parts
            rec = (float(t), int(pid), int(start, 0), int(length, 0))
        except ValueError:
            raise PyksmError(f"{path}:{n}: expected TIME PID START LEN, got {line!r}") from None
        rows.append(_record(f"{path}:{n}", *rec))
    return HintTrace.from_records(rows)


LOADERS: dict[str, Callable[[Path], HintTrace]] = {
    ".npz": _load_npz,
    ".jsonl": _load_jsonl,
    ".json": _load_jsonl,
    ".txt": _load_text,
}


def _load_collector(path: Path) -> HintTrace:
    return HintTrace.from_records(
        (ev.ts_ns / 1e9, ev.tgid, ev.start, ev.length) for ev in read_trace(path)
    )


def load(path: Path, t0: float | None = None) -> HintTrace:
    """Read a hint trace; ``t0`` (CLOCK_MONOTONIC s) aligns collector traces."""
    if not path.is_file():
        raise PyksmError(f"hint trace {path} not found")
    with path.open("rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        trace = _load_collector(path)
        return trace.shifted(-t0) if t0 is not None else trace
    loader = LOADERS.get(path.suffix, _load_text)
    return loader(path)

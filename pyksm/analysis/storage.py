"""Snapshot series on disk: one NPZ file (uncompressed, memory-cheap to load).

Arrays: times, offsets, pid, vaddr, hash, flags, pfn, optionally raw (N x 4096),
and ``meta``: UTF-8 JSON (format name and version, page size, pids, interval,
the KSM counters per snapshot under ``ksm``). A truncated, foreign or newer file
raises PyksmError with a one-line reason.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pyksm.analysis.series import FORMAT, FORMAT_VERSION, SnapshotSeries
from pyksm.errors import PyksmError

__all__ = ["load", "save"]

ARRAYS = {
    "times": np.float64,
    "offsets": np.int64,
    "pid": np.int32,
    "vaddr": np.uint64,
    "hash": np.uint64,
    "flags": np.uint8,
    "pfn": np.uint64,
}


def save(series: SnapshotSeries, path: Path, compress: bool = False) -> Path:
    """Write ``series`` to ``path`` (``.npz`` is appended when missing)."""
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {
        **series.meta,
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "ksm": series.ksm,
        "raw": series.raw is not None,
    }
    arrays: dict[str, Any] = {k: getattr(series, k) for k in ARRAYS}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if series.raw is not None:
        arrays["raw"] = series.raw
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    tmp.replace(path)
    return path


def load(path: Path) -> SnapshotSeries:
    """Read a series written by :func:`save`."""
    if path.is_dir():
        raise PyksmError(f"snapshot file {path} is a directory")
    if not path.is_file():
        raise PyksmError(f"snapshot file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "meta" not in names:
                raise PyksmError(f"{path}: not a pyksm snapshot file (no metadata)")
            try:
                meta = json.loads(bytes(z["meta"]).decode())
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise PyksmError(f"{path}: corrupt metadata") from None
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise PyksmError(f"{path}: not a pyksm snapshot file")
            if meta.get("version") != FORMAT_VERSION:
                raise PyksmError(
                    f"{path}: snapshot format version {meta.get('version')}, "
                    f"this pyksm reads version {FORMAT_VERSION}"
                )
            missing = [k for k in ARRAYS if k not in names]
            if missing:
                raise PyksmError(f"{path}: missing array(s) {', '.join(missing)}")
            arrays: dict[str, Any] = {}
            for k, dtype in ARRAYS.items():
                a = z[k]
                if a.dtype != dtype:
                    raise PyksmError(f"{path}: array {k} has dtype {a.dtype}, expected {dtype}")
                if a.ndim != 1:
                    raise PyksmError(f"{path}: array {k} has shape {a.shape}, expected 1-D")
                arrays[k] = a
            raw = z["raw"] if "raw" in names else None
    except PyksmError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise PyksmError(f"{path}: truncated or unreadable snapshot file ({e})") from None
    ksm = meta.pop("ksm", [])
    _check_meta(path, meta, ksm)
    return SnapshotSeries(raw=raw, meta=meta, ksm=ksm, **arrays)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_meta(path: Path, meta: dict[str, Any], ksm: Any) -> None:
    """The metadata the analysis reads has the types it expects."""
    for name in ("ksm_start", "t0_monotonic"):
        if meta.get(name) is not None and not _finite(meta[name]):
            raise PyksmError(f"{path}: metadata {name} is {meta[name]!r:.40}, not a number")
    rows_ok = isinstance(ksm, list) and all(
        isinstance(row, dict) and all(v is None or _finite(v) for v in row.values()) for row in ksm
    )
    if not rows_ok:
        raise PyksmError(f"{path}: metadata ksm is not a list of KSM counter objects")

"""Analysis speed (issue 5), same run: page hashing against ``xxhsum -H3`` on the
same 1 GiB tmpfs file (goal ≥ 0.8 of it and ≥ 2 GB/s per core); oracle grouping
of 2 x 1 GiB snapshots (goal < 2 s); simulator page visits (goal ≥ 10 M/s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from pyksm.analysis import oracle, pagehash, simulator
from pyksm.analysis.series import Flag, SnapshotSeries

GIB = 1 << 30
PAGES = GIB // 4096


def _best(fn: Callable[[], object], runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _make_data(path: Path, dup_fraction: float = 0.3) -> None:
    """1 GiB of random pages, ``dup_fraction`` of them copies of other pages."""
    rng = np.random.default_rng(42)
    with path.open("wb") as f:
        for _ in range(16):
            chunk = rng.integers(0, 2**63, size=(PAGES // 16, 512), dtype=np.uint64)
            ndup = int(chunk.shape[0] * dup_fraction)
            src = rng.integers(0, chunk.shape[0] // 8, size=ndup)
            chunk[chunk.shape[0] - ndup :] = chunk[src]
            f.write(chunk.tobytes())


def _series_from(hashes: list[np.ndarray], zeros: list[np.ndarray]) -> SnapshotSeries:
    snaps = []
    for h, z in zip(hashes, zeros, strict=True):
        n = h.size
        snaps.append(
            {
                "pid": np.full(n, 1000, np.int32),
                "vaddr": 0x7F0000000000 + np.arange(n, dtype=np.uint64) * np.uint64(4096),
                "hash": h,
                "flags": np.where(z, np.uint8(Flag.ZERO | Flag.PRESENT), np.uint8(Flag.PRESENT)),
            }
        )
    return SnapshotSeries.build(snaps, [float(i) for i in range(len(snaps))])


def _core_rate(data: Path) -> tuple[float, np.ndarray, np.ndarray]:
    """Single-thread hashing time of the file's bytes already in memory."""
    mem = np.fromfile(data, dtype=np.uint8)
    t = _best(lambda: pagehash.hash_pages(mem))
    h, z = pagehash.hash_pages(mem)
    return t, h, z


def run(console: Console) -> dict[str, Any]:
    if not shutil.which("xxhsum"):
        raise RuntimeError("xxhsum is missing: make setup (Debian package xxhash)")
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        data = Path(tmp) / "bench-1gib"
        console.print(f"writing 1 GiB test data to {data}")
        _make_data(data)
        # warm JIT caches
        pagehash.hash_pages(np.zeros(4096 * 64, np.uint8))
        pagehash.hash_file(data)
        t_xxh, t_file = float("inf"), float("inf")
        for _ in range(5):  # interleaved, best of each: fair under background load
            t_xxh = min(
                t_xxh,
                _best(
                    lambda: subprocess.run(
                        ["xxhsum", "-H3", str(data)], check=True, capture_output=True
                    ),
                    1,
                ),
            )
            t_file = min(t_file, _best(lambda: pagehash.hash_file(data), 1))
        t_core, h1, z1 = _core_rate(data)
        # second snapshot: a quarter of the pages rewritten
        h2, z2 = h1.copy(), z1.copy()
        h2[: PAGES // 4] ^= np.uint64(0xABCDEF)
        series = _series_from([h1, h2], [z1, z2])

        def group() -> None:
            oracle.per_snapshot(series)
            oracle.lifetimes(series)

        group()
        t_group = _best(group)
        opp = oracle.per_snapshot(series)[0]["opportunities"]

        # simulator: 256 Ki sites, 60 snapshots (5 % of pages change each second)
        rng = np.random.default_rng(3)
        n = 1 << 18
        content = rng.integers(0, n // 2, size=n).astype(np.uint64)
        snaps_h = []
        for _ in range(60):
            change = rng.integers(0, n, size=n // 20)
            content = content.copy()
            content[change] = rng.integers(n, 4 * n, size=change.size).astype(np.uint64)
            snaps_h.append(content)
        sim_series = _series_from(snaps_h, [np.zeros(n, bool)] * 60)
        inp = simulator.SimInput.from_series(sim_series)
        params = simulator.ScanParams(pages_to_scan=20000, sleep_ms=20.0, smart_scan=False)
        simulator.simulate(inp, params)
        t0 = time.perf_counter()
        res = simulator.simulate(inp, params)
        t_sim = time.perf_counter() - t0
        visits = res.counters["visits"]
    ratio = t_xxh / t_file
    core_gbs = GIB / t_core / 1e9
    rate = visits / t_sim
    return {
        "cpus": os.cpu_count(),
        "opportunities_in_1gib": opp,
        "metrics": [
            {
                "name": "page hashing of a 1 GiB tmpfs file",
                "value": GIB / t_file / 1e9,
                "unit": "GB/s",
                "baseline": GIB / t_xxh / 1e9,
                "ratio": ratio,
                "goal": "ratio to xxhsum -H3 ≥ 0.8",
                "met": ratio >= 0.8,
            },
            {
                "name": "page hashing per core (in memory)",
                "value": core_gbs,
                "unit": "GB/s",
                "goal": "≥ 2 GB/s",
                "met": core_gbs >= 2.0,
            },
            {
                "name": "oracle grouping + lifetimes, 2 x 1 GiB snapshots",
                "value": t_group,
                "unit": "s",
                "goal": "< 2 s",
                "met": t_group < 2.0,
            },
            {
                "name": "simulator page visits",
                "value": rate / 1e6,
                "unit": "M/s",
                "goal": "≥ 10 M/s",
                "met": rate >= 10e6,
            },
        ],
    }

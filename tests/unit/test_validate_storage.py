"""Merge validation and the on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyksm.analysis import storage, validate
from pyksm.analysis.series import Flag, SnapshotSeries
from pyksm.errors import PyksmError
from tests.unit.analysis_memory import merge, series, snapshot


def _two_process_series() -> SnapshotSeries:
    # pid 1 and pid 2 hold contents 1, 2, 3; snapshot 1: pages 0 of both share
    # KSM PFN 9000; snapshot 2: all three pairs merged (PFNs 9000-9002)
    s0 = merge(snapshot([1, 2, 3], pid=1), snapshot([1, 2, 3], pid=2))
    s1 = merge(
        snapshot([1, 2, 3], pid=1, ksm_pfn={0: 9000}), snapshot([1, 2, 3], pid=2, ksm_pfn={0: 9000})
    )
    k = {0: 9000, 1: 9001, 2: 9002}
    s2 = merge(snapshot([1, 2, 3], pid=1, ksm_pfn=k), snapshot([1, 2, 3], pid=2, ksm_pfn=k))
    return SnapshotSeries.build([s0, s1, s2], [0.0, 1.0, 2.0], ksm=[{"pages_sharing": 0}] * 3)


def test_recall_and_precision() -> None:
    rows = validate.validate(_two_process_series())
    assert [r["kernel_sharing"] for r in rows] == [0, 1, 3]
    assert [r["recall"] for r in rows] == [0.0, pytest.approx(1 / 3), 1.0]
    assert all(r["precision"] == 1.0 and r["wrong"] == 0 for r in rows)
    assert all(r["changed_at_merge"] == 0 for r in rows)


def test_a_merged_page_with_other_content_is_caught() -> None:
    s = _two_process_series()
    # pid 2's page 1 claims KSM PFN 9001 but holds content 7
    bad = snapshot([1, 7, 3], pid=2, ksm_pfn={0: 9000, 1: 9001, 2: 9002})
    last = s.span(2)
    sl = slice(last.start + 3, last.stop)
    s.hash[sl] = bad["hash"]
    rows = validate.validate(s)
    assert rows[2]["wrong"] == 1 and rows[2]["precision"] == pytest.approx(5 / 6)
    assert rows[2]["changed_at_merge"] == 1


def test_validation_needs_pfns() -> None:
    s = _two_process_series()
    s.pfn[:] = 0
    with pytest.raises(PyksmError, match="as root"):
        validate.validate(s)


def test_roundtrip(tmp_path: Path) -> None:
    s = _two_process_series()
    s.meta["interval"] = 1.0
    path = storage.save(s, tmp_path / "run")
    assert path.name == "run.npz"
    back = storage.load(path)
    for k in storage.ARRAYS:
        assert np.array_equal(getattr(back, k), getattr(s, k)), k
    assert back.ksm == s.ksm and back.meta["interval"] == 1.0 and back.raw is None


def test_roundtrip_with_raw_pages(tmp_path: Path) -> None:
    s = series([[1, 2], [1, 1]])
    s.raw = np.zeros((4, 4096), dtype=np.uint8)
    back = storage.load(storage.save(s, tmp_path / "r.npz", compress=True))
    assert back.raw is not None and back.raw.shape == (4, 4096)


def test_truncated_file_is_one_clear_error(tmp_path: Path) -> None:
    path = storage.save(_two_process_series(), tmp_path / "run.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PyksmError, match="truncated or unreadable") as e:
        storage.load(path)
    assert "\n" not in str(e.value)


def test_foreign_and_newer_files(tmp_path: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(PyksmError, match="not a pyksm snapshot file"):
        storage.load(other)
    newer = tmp_path / "newer.npz"
    s = _two_process_series()
    arrays = {k: getattr(s, k) for k in storage.ARRAYS}
    meta = {"format": "pyksm-snapshots", "version": 99}
    np.savez(newer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    with pytest.raises(PyksmError, match="version 99"):
        storage.load(newer)
    with pytest.raises(PyksmError, match="not found"):
        storage.load(tmp_path / "missing.npz")


def test_inconsistent_series_is_rejected() -> None:
    with pytest.raises(PyksmError, match="offsets"):
        SnapshotSeries(
            times=np.zeros(2),
            offsets=np.array([0, 1], dtype=np.int64),
            pid=np.zeros(1, np.int32),
            vaddr=np.zeros(1, np.uint64),
            hash=np.zeros(1, np.uint64),
            flags=np.full(1, int(Flag.PRESENT), np.uint8),
            pfn=np.zeros(1, np.uint64),
        )


def test_kpageflags_marking_every_anon_page_ksm() -> None:
    # Linux 6.12 sets KPF_KSM on all anonymous pages: unshared PFNs are not merges
    s = _two_process_series()
    s.flags |= np.uint8(Flag.KSM)
    rows = validate.validate(s)
    assert [r["kernel_sharing"] for r in rows] == [0, 1, 3]
    assert [r["ksm_pages"] for r in rows] == [0, 2, 6]
    assert all(r["precision"] == 1.0 and r["changed_at_merge"] == 0 for r in rows)


def test_pages_torn_by_a_concurrent_write_are_not_kernel_bugs() -> None:
    s = _two_process_series()
    last = s.span(2)
    bad = snapshot([1, 7, 3], pid=2)
    s.hash[last.start + 4] = bad["hash"][1]
    s.flags[last.start + 4] |= np.uint8(Flag.UNSTABLE)
    r = validate.validate(s)[2]
    assert (r["wrong"], r["unstable"], r["precision"], r["changed_at_merge"]) == (0, 1, 1.0, 0)


def test_stale_content_in_the_previous_snapshot_is_not_a_change_at_merge() -> None:
    s = _two_process_series()
    mid = s.span(1)
    # snapshot 1 read pid 2's page 2 before a write, then settled its PFN: UNSTABLE
    s.hash[mid.start + 5] = snapshot([9, 9, 9], pid=2)["hash"][2]
    s.flags[mid.start + 5] |= np.uint8(Flag.UNSTABLE)
    assert validate.validate(s)[2]["changed_at_merge"] == 0

"""The snapshot oracle of real guests on synthetic snapshots: opportunities,
the guests' kernel sharing, disk blocks, precision, long-lived recall, and
captured sharing as the report computes it from the samples."""

from __future__ import annotations

import mmap
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pyksm.analysis import oracle, validate
from pyksm.analysis.pagehash import hash_pages
from pyksm.analysis.series import SnapshotSeries
from pyksm.experiment import oracle_snapshot as osn
from pyksm.experiment.results import Sample, Summary
from pyksm.report import dataset, metrics
from tests.unit.analysis_memory import merge, pages, snapshot


def _two_guests(a: list[int], b: list[int], ksm: dict[int, int] | None = None) -> dict[str, object]:
    """Guest RAM of pid 1 and pid 2; ``ksm`` maps a page index to a KSM PFN in both."""
    return merge(snapshot(a, pid=1, ksm_pfn=ksm), snapshot(b, pid=2, ksm_pfn=ksm))


def test_opportunities_leave_zero_pages_out_and_sharing_counts_like_pages_sharing() -> None:
    # contents 1 and 2 in both guests, 3 in guest 1 only; zero pages (0) in
    # both, merged too (use_zero_pages=0 merges them into one KSM page)
    s = _two_guests([1, 2, 3, 0, 0], [1, 2, 5, 0, -1], ksm={0: 9000, 3: 9003, 4: 9003})
    (row,) = osn.figures(SnapshotSeries.build([s], [0.0]))
    assert row.present == 9
    assert row.zero_pages == 3
    assert row.opportunities == 2  # contents 1 and 2: one redundant copy each
    assert row.kernel_sharing == 1  # content 1 merged; the merged zero pages do not count
    assert row.ksm_pages == 5
    assert row.wrong == 0


def test_disk_blocks_are_the_file_part() -> None:
    disk = np.unique(hash_pages(pages([1, 7]))[0])
    s = _two_guests([1, 2, 3], [1, 2, 4])
    osn.mark_disk(s["flags"], s["hash"], disk)  # type: ignore[arg-type]
    (row,) = osn.figures(SnapshotSeries.build([s], [0.0]))
    assert (row.opportunities, row.file, row.anon) == (2, 1, 1)
    assert row.file_sharing == 0
    # content 1 (a disk block) and 2 merged: the disk part of the sharing is 1
    m = _two_guests([1, 2, 3], [1, 2, 4], ksm={0: 9000, 1: 9001})
    osn.mark_disk(m["flags"], m["hash"], disk)  # type: ignore[arg-type]
    (merged,) = osn.figures(SnapshotSeries.build([m], [0.0]))
    assert (merged.kernel_sharing, merged.file_sharing) == (2, 1)


def _cross_row(a_ksm: dict[int, int], b_ksm: dict[int, int]) -> osn.SnapshotFigures:
    # guest 1: block 1 in its page cache and in a reader's buffer, block 7
    # twice; guest 2: block 1 once, and an anonymous page
    disk = np.unique(hash_pages(pages([1, 7]))[0])
    s = merge(snapshot([1, 1, 7, 7], pid=1, ksm_pfn=a_ksm), snapshot([1, 2], pid=2, ksm_pfn=b_ksm))
    osn.mark_disk(s["flags"], s["hash"], disk)
    (row,) = osn.figures(SnapshotSeries.build([s], [0.0]))
    return row


def test_disk_blocks_across_guests_are_split_from_copies_within_one() -> None:
    none = _cross_row({}, {})
    assert (none.file, none.file_cross, none.file_sharing, none.file_cross_sharing) == (3, 1, 0, 0)
    # guest 1 merges its own two copies of each block: nothing across guests
    own = _cross_row({0: 9000, 1: 9000, 2: 9007, 3: 9007}, {})
    assert (own.file_sharing, own.file_cross_sharing) == (2, 0)
    # all three copies of block 1 on one KSM page: 2 shared, 1 of them across
    all3 = _cross_row({0: 9000, 1: 9000}, {0: 9000})
    assert (all3.file_sharing, all3.file_cross_sharing) == (2, 1)
    # block 1 on two KSM pages, each mapped by both guests: still one
    # opportunity across two guests
    two = _cross_row({0: 9000, 1: 9001}, {0: 9000})
    assert two.file_cross_sharing == 1
    assert two.file_cross_sharing <= two.file_cross


def test_disk_hashes_of_a_file_skip_zero_blocks(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(pages([3, 0, 3, 4]).tobytes())
    h = osn.disk_hashes(img)
    assert h.size == 2 and np.all(np.diff(h.astype(np.int64)) != 0)


def _episode_series() -> SnapshotSeries:
    """Snapshots every 10 s. Content 1: in both guests for 40 s, merged from
    t=30. Content 2: in both for 40 s, never merged. Content 3: in both for
    10 s only, merged. Content 4: three copies for 40 s, two of them merged
    (one KSM page), the third not."""
    snaps = []
    for i in range(5):
        ksm = {}
        if i >= 3:
            ksm[0] = 9000
        if i in (1, 2):
            ksm[2] = 9002
        a = snapshot([1, 2, 3 if i in (1, 2) else 30 + i, 4, 4], pid=1, ksm_pfn={**ksm, 3: 9004})
        b = snapshot([1, 2, 3 if i in (1, 2) else 50 + i, 6, 7], pid=2, ksm_pfn={**ksm, 3: 9004})
        b["hash"][3] = a["hash"][3]  # content 4 in guest 2 (the same KSM page)
        snaps.append(merge(a, b))
    return SnapshotSeries.build(snaps, [0.0, 10.0, 20.0, 30.0, 40.0])


def test_long_lived_recall_counts_episodes_merged_at_some_snapshot() -> None:
    s = _episode_series()
    lt = oracle.lifetimes(s)
    # content 1, 2: one 40 s episode each; content 3: 10 s; content 4: levels 1 and 2
    assert sorted(lt.seconds.tolist()) == [10.0, 40.0, 40.0, 40.0, 40.0]
    assert sorted(lt.level.tolist()) == [1, 1, 1, 1, 2]
    rec = validate.long_lived_recall(s, 30.0)
    # long-lived: 1 (merged at t=30), 2 (never), 4 level 1 (merged: two pages
    # on one KSM page, sharing 1), 4 level 2 (the third copy: not merged)
    assert (rec.episodes, rec.long_lived, rec.merged) == (5, 4, 2)
    assert rec.recall == pytest.approx(0.5)
    assert validate.long_lived_recall(s, 50.0).recall is None
    # the short-lived content 3 was merged; it counts only with a shorter T
    short = validate.long_lived_recall(s, 5.0)
    assert (short.long_lived, short.merged) == (5, 3)


def test_a_third_copy_left_unmerged_is_not_recalled() -> None:
    snaps = [
        merge(
            snapshot([4, 4], pid=1, ksm_pfn={0: 9004}),
            snapshot([4], pid=2, ksm_pfn={0: 9004}),
        )
        for _ in range(4)
    ]
    s = SnapshotSeries.build(snaps, [0.0, 10.0, 20.0, 30.0])
    rec = validate.long_lived_recall(s, 30.0)
    assert (rec.long_lived, rec.merged) == (2, 1)  # level 1 merged, level 2 not


def test_validation_precision_and_histogram() -> None:
    s = _episode_series()
    rows = osn.figures(s)
    doc = osn.validation(s, rows, 30.0)
    assert doc["precision"] == 1.0 and doc["wrong"] == 0
    assert doc["long_lived_recall"] == pytest.approx(0.5)
    assert doc["oracle"] == "snapshot"
    # a merged page whose content is not its KSM page's: precision < 1
    bad = s.hash.copy()
    first = s.span(4)
    bad[first.start] = np.uint64(12345)
    s2 = SnapshotSeries(s.times, s.offsets, s.pid, s.vaddr, bad, s.flags, s.pfn)
    doc2 = osn.validation(s2, osn.figures(s2), 30.0)
    assert doc2["wrong"] >= 1 and doc2["precision"] < 1.0
    hist = osn.lifetime_histogram(oracle.lifetimes(s), s.count)
    assert sum(hist["ended"]) == 1  # type: ignore[arg-type]  # content 3, 10 s
    assert sum(hist["open_at_end"]) == 4  # type: ignore[arg-type]


def test_prepare_runs_the_whole_analysis_once() -> None:
    assert 0.0 <= osn.prepare() < 120.0


def test_the_oracle_takes_at_most_half_a_cpu() -> None:
    assert osn.pause_after(0.7, 10.0) == pytest.approx(9.3)  # on time
    assert osn.pause_after(14.0, 10.0) == pytest.approx(14.0)  # slow: the interval stretches
    assert osn.pause_after(0.01, 0.2) == osn.MIN_PAUSE_S


def test_captured_sharing_is_the_ratio_of_the_integrals(tmp_path: Path) -> None:
    # samples holding the last snapshot's figures, as qemu_runner writes them
    rows = [
        Sample(
            t=float(t),
            pages_sharing=ks,
            ksmd_ticks=t,
            oracle=opp,
            oracle_file=opp // 2,
            counters={
                "guests_sharing_file": ks // 2,
                "guests_sharing_file_cross": ks // 4,
                "oracle_file_cross": opp // 4,
            },
        )
        for t, (ks, opp) in enumerate([(0, 0), (0, 100), (50, 100), (100, 100), (100, 100)])
    ]
    d = tmp_path / "ksm++"
    d.mkdir()
    (d / "samples.jsonl").write_text("".join(r.to_json() + "\n" for r in rows))
    summary = Summary(mode="ksm++", clk_tck=100, lifetimes={}, oracle="snapshot")
    (d / "summary.json").write_text(summary.to_json())
    run = dataset.load_mode("qemu-kernel-build", d)
    assert run.summary is not None and run.summary.oracle == "snapshot"
    m = metrics.compute(run)
    # ∫ks = 0+25+75+100 = 200; ∫opp = 50+100+100+100 = 350
    assert m.captured == pytest.approx(200 / 350)
    # the disk-block part: ∫ = 0+12.5+37.5+50 = 100 over 25+50+50+50 = 175
    assert metrics.captured_file(run) == pytest.approx(100 / 175)
    # across guests: half of the disk-block opportunities; ∫ (0, 0, 12, 25, 25)
    # = 49.5 of ∫ 87.5
    assert metrics.cross_share(run) == pytest.approx(0.5)
    assert metrics.captured_file_cross(run) == pytest.approx(49.5 / 87.5)
    assert (m.disk_captured, m.disk_cross_share) == (pytest.approx(100 / 175), 0.5)
    assert m.disk_cross_captured == pytest.approx(49.5 / 87.5)


def _holder(content: bytes) -> subprocess.Popen[str]:
    """A child with one mergeable anonymous page of ``content``, 4 pages."""
    code = (
        "import mmap, sys\n"
        "m = mmap.mmap(-1, 4 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
        "m.madvise(mmap.MADV_MERGEABLE)\n"
        f"m[:] = {content!r} * 4\n"
        "print('ok', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ok"
    return p


@pytest.mark.skipif(not hasattr(mmap, "MADV_MERGEABLE"), reason="no MADV_MERGEABLE")
def test_the_oracle_thread_snapshots_two_processes() -> None:
    page = bytes(range(256)) * 16
    procs = [_holder(page), _holder(page)]
    try:
        o = osn.SnapshotOracle([p.pid for p in procs], 0.2, np.empty(0, np.uint64))
        o.start(time.monotonic())
        deadline = time.monotonic() + 30
        while len(o.rows) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        o.stop()
        o.check()
        hist, doc = o.finish(0.1)
    finally:
        for p in procs:
            p.communicate("\n", timeout=10)
    assert len(o.rows) >= 2
    # 8 equal pages in the two processes: 7 opportunities (host KSM is off)
    assert all(r.opportunities == 7 and r.present == 8 for r in o.rows)
    assert doc["snapshots"] == len(o.rows) and doc["precision"] == 1.0
    assert sum(hist["open_at_end"]) == 7  # type: ignore[arg-type]

"""The ledger oracle and the QEMU-like guest: exact counts on known content."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from pyksm.experiment.guest import (
    IMAGE_TAG,
    PAGE,
    SHARED_TAG,
    UNIQUE_TAG,
    Guest,
    block_id,
    make_image,
)
from pyksm.experiment.guest import argv as guest_argv
from pyksm.experiment.oracle_ledger import LedgerOracle
from pyksm.experiment.scenarios import GuestSpec


def test_opportunities_and_lifetimes_are_exact() -> None:
    o = LedgerOracle([])
    f = IMAGE_TAG | 5
    # t=0: content 7 twice, file block f three times, 9 once -> 1 + 2 = 3 sharable.
    s = o.observe(np.array([7, 7, f, f, f, 9], dtype=np.int64), 0.0)
    assert (s.present, s.distinct, s.opportunities, s.file, s.anon) == (6, 3, 3, 2, 1)
    # t=2: 7 is no longer duplicated (lived 2 s); f still is.
    s = o.observe(np.array([7, 8, f, f, 10, 9], dtype=np.int64), 2.0)
    assert (s.opportunities, s.file, s.anon) == (1, 1, 0)
    assert o.lifetimes == [2.0]
    # t=3.5: f ends after 3.5 s; 9 becomes a new opportunity.
    s = o.observe(np.array([9, 9, 1, 2, 3, 4], dtype=np.int64), 3.5)
    assert s.opportunities == 1 and s.anon == 1
    assert o.lifetimes == [2.0, 3.5]
    h = o.histogram(10.0)
    assert h["ended"][:3] == [0, 2, 0]  # both in the 1-5 s bin
    assert sum(h["open_at_end"]) == 1  # content 9, still open


def test_two_guests_reading_the_same_blocks_are_duplicates(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, 4)
    spec = GuestSpec(
        name="g",
        ram_mib=4,
        cache_mib=2,
        heap_mib=1,
        churn_pages_s=0,
        io="sequential",
        read_mib_s=64.0,
    )
    guests = [Guest(spec, i, image, tmp_path / f"ledger{i}", seed=1) for i in range(2)]
    for g in guests:
        g.boot()
    o = LedgerOracle([tmp_path / "ledger0", tmp_path / "ledger1"])
    assert o.sample(0.0).opportunities == 0  # booted guests are all unique
    for g in guests:
        g.next_file = 0
        g.read_file()
    s = o.sample(1.0)
    assert s.opportunities == s.file > 0
    # The ledger tells the truth about guest RAM: check every cached frame.
    for g in guests:
        for block, frame in g.cache.items():
            word = int(np.frombuffer(g.ram, dtype=np.uint64, count=1, offset=frame * PAGE)[0])
            assert word == block_id(block)


def test_guest_process_protocol(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, 4)
    spec = GuestSpec(
        name="g", ram_mib=4, cache_mib=1, heap_mib=1, churn_pages_s=100, read_mib_s=8.0
    )
    p = subprocess.Popen(
        guest_argv(spec, 0, image, tmp_path / "l", seed=42, duration=0.5),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = p.communicate("go\n\n", timeout=60)
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["ram"][1] == 4 << 20
    assert lines[1]["read_bytes"] > 0 and lines[1]["preadv_calls"] > 0
    assert p.returncode == 0


def test_fast_count_agrees_with_sorting() -> None:
    """The oracle's count (bincount over disk blocks, unique-tagged ids not
    counted one by one) gives what np.unique over everything gives."""
    rng = np.random.default_rng(3)
    ids = np.concatenate(
        [
            IMAGE_TAG | rng.integers(1, 500, 3000),
            UNIQUE_TAG | (1 << 40) | np.arange(2000),
            SHARED_TAG | rng.integers(1, 50, 400),
            rng.integers(1, 30, 100),
        ]
    ).astype(np.int64)
    rng.shuffle(ids)
    o = LedgerOracle([])
    s = o.observe(ids, 0.0)
    uniq, counts = np.unique(ids, return_counts=True)
    assert s.distinct == uniq.size
    assert s.opportunities == ids.size - uniq.size
    file = (uniq & IMAGE_TAG) != 0
    assert s.file == int((counts[file] - 1).sum())
    assert s.anon == int((counts[~file] - 1).sum())


def test_io_achieved_is_bytes_over_the_set_pace() -> None:
    from pyksm.experiment.runner import io_achieved

    spec = GuestSpec(name="g", read_mib_s=2.0, start_delay_s=3.0)
    assert io_achieved(spec, {"read_bytes": 2 << 20, "preadv_calls": 1}, 4.0) == 1.0
    hits = {"read_bytes": 0, "served_bytes": 3 << 20, "preadv_calls": 0}
    assert io_achieved(spec, hits, 4.0) == 1.5  # cache hits are reads of the workload too
    assert io_achieved(spec, {"read_bytes": 1 << 20, "preadv_calls": 1}, 4.0) == 0.5
    assert io_achieved(GuestSpec(name="n", io="none"), {"read_bytes": 0}, 4.0) is None

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyksm.analysis import pagehash
from pyksm.errors import PyksmError
from tests.unit.analysis_memory import pages


def test_equal_pages_equal_hashes_and_zero_detection() -> None:
    h, zero = pagehash.hash_pages(pages([1, 2, 1, 0, 0, 3]))
    assert h[0] == h[2] and h[3] == h[4]
    assert len({int(x) for x in h}) == 4
    assert zero.tolist() == [False, False, False, True, True, False]
    assert int(h[3]) == pagehash.ZERO_HASH


def test_no_collisions_among_random_pages() -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 2**63, size=(20000, 512), dtype=np.uint64)
    data[:, 1:] = 0  # pages differing only in their first word
    h, _ = pagehash.hash_pages(data.view(np.uint8))
    assert np.unique(h).size == 20000


def test_single_bit_flips_avalanche() -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, size=4096, dtype=np.uint8)
    ref = pagehash.hash_bytes(base.tobytes())
    flips = []
    for bit in rng.choice(4096 * 8, size=400, replace=False):
        p = base.copy()
        p[bit // 8] ^= np.uint8(1 << (bit % 8))
        flips.append(bin(pagehash.hash_bytes(p.tobytes()) ^ ref).count("1"))
    assert min(flips) > 10
    assert 30 < np.mean(flips) < 34


def test_parallel_and_file_paths_agree(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, size=3000 * 4096 + 100, dtype=np.uint8)
    f = tmp_path / "data"
    f.write_bytes(data.tobytes())
    hf, zf = pagehash.hash_file(f)
    padded = np.zeros(3001 * 4096, dtype=np.uint8)
    padded[: data.size] = data
    hs, zs = pagehash.hash_pages(padded)
    hp, _ = pagehash.hash_pages(padded, parallel=True)
    assert np.array_equal(hf, hs) and np.array_equal(hp, hs) and np.array_equal(zf, zs)


def test_partial_page_is_an_error() -> None:
    with pytest.raises(PyksmError, match="whole number"):
        pagehash.hash_pages(b"\0" * 5000)


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    h, z = pagehash.hash_file(empty)
    assert h.size == 0 and z.size == 0
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\0" * 10)
    h, z = pagehash.hash_file(tiny)
    assert z.tolist() == [True] and int(h[0]) == pagehash.ZERO_HASH
    with pytest.raises(PyksmError, match="cannot read"):
        pagehash.hash_file(tmp_path / "missing")

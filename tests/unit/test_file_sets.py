"""The workload's file sets: where each scenario's guests read in the image."""

from __future__ import annotations

import pytest

from pyksm.experiment import guest, scenarios

BLOCKS = 384 * 256


def _blocks(which: str) -> set[int]:
    return {b for first, n in guest.file_table(BLOCKS, which, 42) for b in range(first, first + n)}


def test_tree_and_www_are_disjoint_halves_and_all_covers_both() -> None:
    tree, www, every = _blocks("tree"), _blocks("www"), _blocks("all")
    assert tree == set(range(BLOCKS // 2))
    assert www == set(range(BLOCKS // 2, BLOCKS))
    assert every == tree | www


def test_unknown_file_set_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown file set"):
        guest.file_table(BLOCKS, "home", 42)


def test_mixed_guests_can_share_tree_blocks_only_through_the_server() -> None:
    a, b = scenarios.SCENARIOS["mixed"].guests
    assert (a.files, b.files) == ("tree", "all")
    assert (a.io, b.io) == ("sequential", "random")


def test_unique_io_guests_read_disjoint_halves() -> None:
    a, b = scenarios.SCENARIOS["unique-io"].guests
    assert (a.files, b.files) == ("tree", "www")
    assert a.io == b.io == "sequential"
    assert not _blocks(a.files) & _blocks(b.files)
    assert a.shared_heap_mib == b.shared_heap_mib == 0

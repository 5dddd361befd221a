"""Helpers for guest scripts: MADV_MERGEABLE private anonymous memory."""

from __future__ import annotations

import ctypes
import mmap

PAGE = mmap.PAGESIZE


class Region:
    """``pages`` pages of MAP_PRIVATE|MAP_ANONYMOUS memory under KSM.

    (A plain ``mmap.mmap(-1, n)`` is MAP_SHARED: KSM ignores shared memory.)
    """

    def __init__(self, pages: int, mergeable: bool = True) -> None:
        self.size = pages * PAGE
        self.map = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if mergeable:
            self.map.madvise(mmap.MADV_MERGEABLE)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))

    def fill(self, page: int, data: bytes) -> None:
        assert len(data) == PAGE
        self.map[page * PAGE : (page + 1) * PAGE] = data

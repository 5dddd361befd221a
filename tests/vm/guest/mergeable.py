"""Helpers for guest scripts: MADV_MERGEABLE private anonymous memory."""

from __future__ import annotations

import ctypes
import mmap
import os

from pyksm.deadline import wait_for
from pyksm.experiment.hintpairs import HintTrace
from pyksm.kernel import hints, ksm, wire

PAGE = mmap.PAGESIZE


def text_page(text: str) -> bytes:
    """A page of ``text`` repeated (cut at the page's end)."""
    return (text.encode() * (PAGE // len(text) + 1))[:PAGE]


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


def ksm_for_hints(k: ksm.Ksm, pages_to_scan: int = 100) -> None:
    """KSM stopped and unmerged, smart scan off (it would skip the pages a
    script watches), hints on at 1:1, 20 ms between batches."""
    k.unmerge(then=2)
    if k.has("smart_scan"):
        k.write("smart_scan", 0)
    k.write("hint_capacity", 4096)
    k.write("hint_interleave", "1:1")
    k.write("sleep_millisecs", 20)
    k.write("pages_to_scan", pages_to_scan)


def wait_counter(
    k: ksm.Ksm, counter: str, at_least: int, poll: float = 0.005, timeout: float = 120
) -> int:
    """Poll a KSM counter until it reaches ``at_least`` and return its value;
    fail the script if ksmd does not get there in time (rather than hang
    until the VM's timeout)."""
    seen: list[int] = []

    def reached() -> bool:
        seen.append(k.read_int(counter))
        return seen[-1] >= at_least

    wait_for(reached, timeout, f"{counter} reaching {at_least}", poll=poll)
    return seen[-1]


def hint_region_traced(k: ksm.Ksm, region: Region) -> tuple[HintTrace, int]:
    """Start tracing hinted visits, then hint all of ``region`` through
    debugfs. Returns the tracer (stop it for the visits) and
    hint_pages_scanned before the hint."""
    tracer = HintTrace()
    tracer.start()
    scanned0 = k.read_int("hint_pages_scanned")
    with hints.HintWriter() as w:
        w.send([wire.Hint(os.getpid(), region.addr, region.size)])
    return tracer, scanned0

"""A QEMU-like guest process (``python -m pyksm.experiment.guest``).

Guest RAM is one MAP_PRIVATE|MAP_ANONYMOUS mapping marked MADV_MERGEABLE, as
QEMU's. Every guest page carries an 8-byte content stamp (rest zero), so a
page's content is known exactly; the guest publishes frame -> content id in a
shared "ledger" file, from which the runner computes the exact oracle (how
many pages could be shared at each moment) at no scanning cost.

Content ids: 1 + block for disk blocks (the same in every guest: the disk
image is shared), tagged unique ids for private memory, a shared tag for the
no-io scenario's anonymous duplicates. Zero is never used.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import sys
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pyksm.experiment.scenarios import GuestSpec

PAGE = 4096
WORDS = PAGE // 8
TICK = 0.05
BATCH_BLOCKS = 32  # one preadv: up to 128 KiB, one iov per guest page
UNIQUE_TAG = 1 << 60
SHARED_TAG = 1 << 59
IMAGE_TAG = 1 << 58


def block_id(block: int) -> int:
    return IMAGE_TAG | (block + 1)


def make_image(path: Path, mib: int) -> None:
    """The shared disk image: block b holds the stamp block_id(b)."""
    blocks = mib * (1 << 20) // PAGE
    if path.exists() and path.stat().st_size == blocks * PAGE:
        return
    data = np.zeros(blocks * WORDS, dtype=np.uint64)
    data[::WORDS] = IMAGE_TAG | (np.arange(blocks, dtype=np.uint64) + 1)
    tmp = path.with_suffix(".tmp")
    data.tofile(tmp)
    tmp.rename(path)


def file_table(blocks: int, which: str, seed: int) -> list[tuple[int, int]]:
    """Files as (first block, block count).

    "tree": many small files (source tree) in the first half of the image;
    "www": fewer, larger files in the second half; "all": files like www's
    over the whole image (a server whose documents include the tree).
    """
    if which not in ("tree", "www", "all"):
        raise ValueError(f"unknown file set {which!r}")
    rng = np.random.default_rng(seed)
    half = blocks // 2
    lo, hi = {"tree": (0, half), "www": (half, blocks), "all": (0, blocks)}[which]
    files = []
    b = lo
    while b < hi:
        n = int(rng.geometric(1 / 3)) if which == "tree" else int(rng.integers(4, 64))
        n = min(n, hi - b)
        files.append((b, n))
        b += n
    return files


class Guest:
    def __init__(self, spec: GuestSpec, index: int, image: Path, ledger: Path, seed: int) -> None:
        self.spec = spec
        self.frames = spec.ram_mib * 256
        self.ram = mmap.mmap(-1, self.frames * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.ram.madvise(mmap.MADV_MERGEABLE)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.ram))
        self.words = np.frombuffer(self.ram, dtype=np.uint64)
        self.view = memoryview(self.ram)
        self.ledger_file = ledger.open("w+b")
        self.ledger_file.truncate(self.frames * 8)
        self.ledger_map = mmap.mmap(self.ledger_file.fileno(), self.frames * 8)
        self.ledger = np.frombuffer(self.ledger_map, dtype=np.int64)
        self.unique_base = UNIQUE_TAG | ((index + 1) << 40)
        self.unique_next = 0
        # Layout: [cache | heap | rest (unique, guest kernel and programs)]
        self.cache_frames = spec.cache_mib * 256
        self.heap_lo = self.cache_frames
        self.heap_frames = spec.heap_mib * 256
        self.rng = np.random.default_rng(seed * 1000 + spec.order_seed)
        self.shared_rng = np.random.default_rng(seed)  # same in every guest
        self.fd = os.open(image, os.O_RDONLY)
        self.blocks = os.fstat(self.fd).st_size // PAGE
        self.cache: OrderedDict[int, int] = OrderedDict()  # block -> frame, LRU first
        self.free = list(range(self.cache_frames - 1, -1, -1))
        self.files = file_table(self.blocks, spec.files, seed) if spec.io != "none" else []
        self.order = self._order()
        self.next_file = 0
        self.read_bytes = 0  # read from disk (page-cache misses)
        self.served_bytes = 0  # the workload's reads, cache hits included
        self.preadv_calls = 0
        self.shared_k = 0
        self.heap_cursor = 0

    def stamp(self, frames: np.ndarray, ids: np.ndarray) -> None:
        self.words[frames * WORDS] = ids.astype(np.uint64)
        self.ledger[frames] = ids.astype(np.int64)

    def _unique(self, n: int) -> np.ndarray:
        ids = self.unique_base + self.unique_next + np.arange(n, dtype=np.int64)
        self.unique_next += n
        return ids

    def boot(self) -> None:
        """Fill all of RAM with unique content: a booted, busy guest."""
        frames = np.arange(self.frames, dtype=np.int64)
        self.stamp(frames, self._unique(self.frames))

    def _order(self) -> list[int]:
        n = len(self.files)
        if self.spec.io == "sequential":
            order = np.arange(n)
            # Local reordering: shuffle within windows of 8 files.
            for lo in range(0, n, 8):
                self.rng.shuffle(order[lo : lo + 8])
            return [int(x) for x in order]
        return []

    def _pick_file(self) -> int:
        if self.spec.io == "sequential":
            f = self.order[self.next_file % len(self.order)]
            self.next_file += 1
            return f
        return int(self.rng.integers(0, len(self.files)))

    def _frame_for(self, block: int) -> int:
        if self.free:
            frame = self.free.pop()
        else:
            _, frame = self.cache.popitem(last=False)
        self.cache[block] = frame
        return frame

    def read_file(self) -> int:
        first, count = self.files[self._pick_file()]
        done = 0
        b = first
        while b < first + count:
            run = min(BATCH_BLOCKS, first + count - b)
            blocks = [x for x in range(b, b + run) if x not in self.cache]
            for x in range(b, b + run):
                if x in self.cache:
                    self.cache.move_to_end(x)
            if blocks:
                frames = [self._frame_for(x) for x in blocks]
                # Contiguous disk blocks: one preadv per contiguous block run.
                start = 0
                while start < len(blocks):
                    end = start + 1
                    while end < len(blocks) and blocks[end] == blocks[end - 1] + 1:
                        end += 1
                    iov = [self.view[f * PAGE : (f + 1) * PAGE] for f in frames[start:end]]
                    n = os.preadv(self.fd, iov, blocks[start] * PAGE)
                    assert n == len(iov) * PAGE, n
                    self.preadv_calls += 1
                    start = end
                fr = np.array(frames, dtype=np.int64)
                self.ledger[fr] = np.array([block_id(x) for x in blocks], dtype=np.int64)
                done += len(blocks) * PAGE
            b += run
        self.read_bytes += done
        self.served_bytes += count * PAGE
        return count * PAGE

    def churn(self, pages: int) -> None:
        if pages <= 0 or not self.heap_frames:
            return
        shared = self.spec.shared_heap_mib * 256
        if shared:
            # Walk the shared part in order with the same content sequence in
            # every guest: anonymous duplicates that live until overwritten.
            idx = (self.heap_cursor + np.arange(pages)) % shared
            self.heap_cursor = (self.heap_cursor + pages) % shared
            ids = SHARED_TAG | (self.shared_k + np.arange(pages, dtype=np.int64) + 1)
            self.shared_k += pages
            self.stamp(self.heap_lo + idx, ids)
            return
        frames = self.heap_lo + self.rng.integers(0, self.heap_frames, pages)
        self.stamp(frames.astype(np.int64), self._unique(pages))

    def run(self, duration: float) -> dict[str, float]:
        t0 = time.monotonic()
        read_budget = 0.0
        churn_budget = 0.0
        while (now := time.monotonic()) - t0 < duration:
            if now - t0 >= self.spec.start_delay_s:
                if self.files:
                    read_budget += self.spec.read_mib_s * (1 << 20) * TICK
                    while read_budget > 0:
                        read_budget -= self.read_file()
                churn_budget += self.spec.churn_pages_s * TICK
                n = int(churn_budget)
                churn_budget -= n
                self.churn(n)
            time.sleep(max(0.0, TICK - (time.monotonic() - now)))
        return {
            "read_bytes": self.read_bytes,
            "served_bytes": self.served_bytes,
            "preadv_calls": self.preadv_calls,
        }


def argv(
    spec: GuestSpec, index: int, image: Path, ledger: Path, seed: int, duration: float
) -> list[str]:
    """The command line that starts one guest process (see ``main``)."""
    return [
        sys.executable,
        "-m",
        "pyksm.experiment.guest",
        "--spec",
        json.dumps(asdict(spec)),
        "--index",
        str(index),
        "--image",
        str(image),
        "--ledger",
        str(ledger),
        "--seed",
        str(seed),
        "--duration",
        str(duration),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", required=True, help="GuestSpec as JSON")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--ledger", type=Path, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--duration", type=float, required=True)
    a = p.parse_args()
    spec = GuestSpec(**json.loads(a.spec))
    g = Guest(spec, a.index, a.image, a.ledger, a.seed)
    g.boot()
    # Tell the runner where guest RAM is, then wait for "go".
    print(json.dumps({"pid": os.getpid(), "ram": [g.addr, g.frames * PAGE]}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    stats = g.run(a.duration)
    print(json.dumps(stats), flush=True)
    sys.stdin.readline()  # hold the memory until the runner is done sampling
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A QEMU-like target: reads a file into MADV_MERGEABLE memory with preadv,
readv, pread64, read, io_submit and (--io-uring) io_uring READ and READV, and
writes the exact (syscall, address, length) list it expects a tracer to see.

usage: read_into_mergeable.py DATA OUT.json [--wait-for PATH]... [--linger S] [--pages N]
                              [--no-aio] [--io-uring] [--ballast-mib N]

Every destination range is its own slot with a gap after it, so a
controller that coalesces adjacent ranges still sends one hint per range.
The data is read twice, into two halves of the region, so the second copy
can merge with the first. --wait-for: start once every PATH exists (the
collectors signal that their probes are attached). The io_uring reads
(uring.py, raw syscalls) make no read syscall: only the vfs probe layer
sees them; they are listed as "io_uring".
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import struct
import time

import uring  # tests/vm/guest/uring.py, next to this script

from pyksm.deadline import wait_for

PAGE = mmap.PAGESIZE
SYS_IO_SETUP, SYS_IO_DESTROY, SYS_IO_GETEVENTS, SYS_IO_SUBMIT = 206, 207, 208, 209
IOCB = struct.Struct("<QIIHhIQQqQII")  # struct iocb, 64 bytes
IOCB_CMD_PREAD = 0
SLOTS = 6  # preadv (2 iovecs), readv, pread64, read, io_submit
URING_SLOTS = 3  # io_uring READ, READV (2 iovecs)


def aio_pread(libc: ctypes.CDLL, fd: int, addr: int, size: int) -> int:
    ctx = ctypes.c_ulong(0)
    if libc.syscall(SYS_IO_SETUP, 1, ctypes.byref(ctx)) != 0:
        return -1
    cb = ctypes.create_string_buffer(
        IOCB.pack(0, 0, 0, IOCB_CMD_PREAD, 0, fd, addr, size, 0, 0, 0, 0), IOCB.size
    )
    cbs = (ctypes.c_void_p * 1)(ctypes.addressof(cb))
    events = ctypes.create_string_buffer(32)
    try:
        if libc.syscall(SYS_IO_SUBMIT, ctx, 1, cbs) != 1:
            return -1
        if libc.syscall(SYS_IO_GETEVENTS, ctx, 1, 1, events, None) != 1:
            return -1
        return int(struct.unpack_from("<q", events.raw, 16)[0])
    finally:
        libc.syscall(SYS_IO_DESTROY, ctx)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--wait-for", action="append", default=[])
    ap.add_argument("--wait-timeout", type=float, default=600.0, help="for the go files")
    ap.add_argument("--linger", type=float, default=0.0)
    ap.add_argument("--pages", type=int, default=16, help="pages per syscall")
    ap.add_argument("--no-aio", action="store_true")
    ap.add_argument("--io-uring", action="store_true", help="also read with io_uring")
    ap.add_argument(
        "--ballast-mib",
        type=int,
        default=0,
        help="this much MADV_MERGEABLE memory of unique pages, mapped first, "
        "so ksmd's linear scan takes a while to come round to the reads",
    )
    a = ap.parse_args()
    if a.ballast_mib:  # stays mapped until the process exits
        ballast = mmap.mmap(-1, a.ballast_mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        ballast.madvise(mmap.MADV_MERGEABLE)
        ballast.write(os.urandom(a.ballast_mib << 20))
    if a.wait_for:
        wait_for(
            lambda: all(os.path.exists(w) for w in a.wait_for),
            a.wait_timeout,
            "the go files",
            poll=0.05,
        )
        time.sleep(0.3)
    size = a.pages * PAGE
    stride = 2 * size  # a slot and a gap
    half = (SLOTS + (URING_SLOTS if a.io_uring else 0)) * stride
    region = mmap.mmap(-1, 2 * half, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_MERGEABLE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    mv = memoryview(region)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.pread64.restype = ctypes.c_ssize_t
    libc.read.restype = ctypes.c_ssize_t
    libc.syscall.restype = ctypes.c_long
    fd = os.open(a.data, os.O_RDONLY)
    exp: list[tuple[str, int, int]] = []
    for copy in range(2):
        s = [copy * half + k * stride for k in range(SLOTS)]
        h = size // 2
        got = os.preadv(fd, [mv[s[0] : s[0] + h], mv[s[1] : s[1] + h]], 0)
        assert got == 2 * h
        exp += [("preadv", base + s[0], h), ("preadv", base + s[1], h)]
        os.lseek(fd, h, os.SEEK_SET)
        got = os.readv(fd, [mv[s[2] : s[2] + size]])
        exp.append(("readv", base + s[2], got))
        got = libc.pread64(fd, ctypes.c_void_p(base + s[3]), ctypes.c_size_t(size), 0)
        exp.append(("pread64", base + s[3], got))
        os.lseek(fd, 0, os.SEEK_SET)
        got = libc.read(fd, ctypes.c_void_p(base + s[4]), ctypes.c_size_t(size))
        exp.append(("read", base + s[4], got))
        if not a.no_aio:
            got = aio_pread(libc, fd, base + s[5], size)
            assert got == size, got
            exp.append(("io_submit", base + s[5], size))
        if a.io_uring:
            u = [copy * half + (SLOTS + k) * stride for k in range(URING_SLOTS)]
            ring = uring.Ring()
            got = ring.read(fd, base + u[0], size, 0)
            assert got == size, got
            exp.append(("io_uring", base + u[0], size))
            got = ring.readv(fd, [(base + u[1], h), (base + u[2], h)], 0)
            assert got == 2 * h, got
            exp += [("io_uring", base + u[1], h), ("io_uring", base + u[2], h)]
            ring.close()
    # eventfd-like chatter that must not be traced
    r, w = os.pipe()
    for _ in range(10):
        os.write(w, b"12345678")
        os.read(r, 8)
    # Whole or not at all: collect_live reads the file as soon as it exists.
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "base": base, "size": len(region), "expected": exp}, f)
    os.replace(tmp, a.out)
    time.sleep(a.linger)


if __name__ == "__main__":
    main()

"""A minimal io_uring for the test readers: IORING_OP_READ and IORING_OP_READV
through raw syscalls (ctypes + mmap), no liburing and no new dependency.

One submission at a time, waited for with io_uring_enter(GETEVENTS); enough
to make reads that never pass through a read syscall (QEMU aio=io_uring).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_READV, IORING_OP_READ = 1, 22
IORING_ENTER_GETEVENTS = 1
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000
PARAMS = struct.Struct("<7I3I" + "7IIQ" + "7IIQ")  # struct io_uring_params, 120 bytes
SQE = struct.Struct("<BBHiQQIIQ24x")  # struct io_uring_sqe, 64 bytes
CQE = struct.Struct("<QiI")  # struct io_uring_cqe, 16 bytes
IOVEC = struct.Struct("<QQ")


class Ring:
    def __init__(self, entries: int = 4) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        params = ctypes.create_string_buffer(PARAMS.size)
        fd = self.libc.syscall(SYS_IO_URING_SETUP, entries, params)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "io_uring_setup")
        self.fd = fd
        p = PARAMS.unpack(params.raw)
        self.sq_entries, self.cq_entries = p[0], p[1]
        sq = dict(
            zip(
                ("head", "tail", "mask", "entries", "flags", "dropped", "array"),
                p[10:17],
                strict=True,
            )
        )
        cq = dict(
            zip(("head", "tail", "mask", "entries", "overflow", "cqes"), p[19:25], strict=True)
        )
        self.sq_off, self.cq_off = sq, cq
        flags, prot = (
            mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
            mmap.PROT_READ | mmap.PROT_WRITE,
        )
        self.sq = mmap.mmap(
            fd, sq["array"] + 4 * self.sq_entries, flags, prot, offset=IORING_OFF_SQ_RING
        )
        self.cq = mmap.mmap(
            fd, cq["cqes"] + CQE.size * self.cq_entries, flags, prot, offset=IORING_OFF_CQ_RING
        )
        self.sqes = mmap.mmap(fd, SQE.size * self.sq_entries, flags, prot, offset=IORING_OFF_SQES)

    def _u32(self, m: mmap.mmap, off: int) -> int:
        return int(struct.unpack_from("<I", m, off)[0])

    def submit_wait(self, opcode: int, fd: int, addr: int, length: int, offset: int) -> int:
        """Submit one read, wait for it; its result (bytes or -errno)."""
        tail = self._u32(self.sq, self.sq_off["tail"])
        idx = tail & self._u32(self.sq, self.sq_off["mask"])
        SQE.pack_into(self.sqes, idx * SQE.size, opcode, 0, 0, fd, offset, addr, length, 0, 7)
        struct.pack_into("<I", self.sq, self.sq_off["array"] + 4 * idx, idx)
        struct.pack_into("<I", self.sq, self.sq_off["tail"], (tail + 1) & 0xFFFFFFFF)
        n = self.libc.syscall(SYS_IO_URING_ENTER, self.fd, 1, 1, IORING_ENTER_GETEVENTS, None, 0)
        if n < 0:
            raise OSError(ctypes.get_errno(), "io_uring_enter")
        head = self._u32(self.cq, self.cq_off["head"])
        if head == self._u32(self.cq, self.cq_off["tail"]):
            raise OSError("io_uring: no completion")
        ci = head & self._u32(self.cq, self.cq_off["mask"])
        _, res, _ = CQE.unpack_from(self.cq, self.cq_off["cqes"] + ci * CQE.size)
        struct.pack_into("<I", self.cq, self.cq_off["head"], (head + 1) & 0xFFFFFFFF)
        return int(res)

    def read(self, fd: int, addr: int, length: int, offset: int) -> int:
        return self.submit_wait(IORING_OP_READ, fd, addr, length, offset)

    def readv(self, fd: int, ranges: list[tuple[int, int]], offset: int) -> int:
        iov = ctypes.create_string_buffer(b"".join(IOVEC.pack(a, n) for a, n in ranges))
        return self.submit_wait(IORING_OP_READV, fd, ctypes.addressof(iov), len(ranges), offset)

    def close(self) -> None:
        for m in (self.sq, self.cq, self.sqes):
            m.close()
        os.close(self.fd)

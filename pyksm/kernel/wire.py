"""The KSM++ hint record: the one wire format shared with the kernel.

The kernel's C definition is ``struct ksm_hint_record`` in the series'
UAPI header; ``tests/unit/test_wire.py`` compiles that header and checks with
pyelftools that its layout equals this one, field by field.

    struct ksm_hint_record {      offset size
        __s32 pid;                  0     4   target process (writer's pid namespace)
        __u32 flags;                4     4   must be 0
        __u64 start;                8     8   virtual address in the target
        __u64 len;                 16     8   bytes (>0; widened to page bounds)
    };                                   24
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

FORMAT = "<iIQQ"
RECORD = struct.Struct(FORMAT)
RECORD_SIZE = RECORD.size  # 24
C_NAME = "ksm_hint_record"
# (field, offset, size) as the C struct must lay them out.
FIELDS: tuple[tuple[str, int, int], ...] = (
    ("pid", 0, 4),
    ("flags", 4, 4),
    ("start", 8, 8),
    ("len", 16, 8),
)


@dataclass(frozen=True, slots=True)
class Hint:
    pid: int
    start: int
    length: int
    flags: int = 0

    def pack(self) -> bytes:
        return RECORD.pack(self.pid, self.flags, self.start, self.length)


def pack_many(hints: Iterable[Hint]) -> bytes:
    return b"".join(h.pack() for h in hints)


def unpack_many(data: bytes) -> list[Hint]:
    if len(data) % RECORD_SIZE:
        raise ValueError(f"{len(data)} bytes is not a multiple of {RECORD_SIZE}")
    return [
        Hint(pid, start, length, flags) for pid, flags, start, length in RECORD.iter_unpack(data)
    ]

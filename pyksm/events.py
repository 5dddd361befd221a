"""The read pipeline's own types: what a probe sees, what a trace stores.

No BPF here: ``control``, ``collect.tracefile``, ``analysis`` and tests use
these without loading bcc. The same event exists three times and
``tests/unit/test_events.py`` checks they agree:

- in C, ``struct read_event`` of ``bpf/read_common.h`` (what the ring buffer carries);
- in ctypes, :class:`EventStruct` (how the loader reads it);
- in the hint-trace file, :data:`RECORD` (``pyksm.collect.tracefile``).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

__all__ = [
    "LAYER_CHOICES",
    "PROBE_NAMES",
    "RECORD",
    "EventStruct",
    "ReadEvent",
    "probe_name",
]

# Probe layers (pyksm.probes.loader): `pyksm collect --layer`.
LAYER_CHOICES = ("auto", "syscalls", "vfs", "vfs-kprobe", "vfs-fentry")

# Must match the PROBE_* ids in bpf/read_common.h (the trace format stores
# them): append new ids, never renumber.
PROBE_NAMES: dict[int, str] = {
    1: "read",
    2: "pread64",
    3: "readv",
    4: "preadv",
    5: "preadv2",
    6: "io_submit",
    7: "vfs_read",
    8: "vfs_readv",
    9: "aio_read",
    10: "filemap_read",
}


def probe_name(probe: int) -> str:
    return PROBE_NAMES.get(probe, f"probe{probe}")


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """``length`` bytes read into ``start``.. of ``tgid`` at ``ts_ns`` (CLOCK_MONOTONIC)."""

    ts_ns: int
    tgid: int
    probe: int
    start: int
    length: int


class EventStruct(ctypes.Structure):
    """``struct read_event`` as the ring buffer carries it."""

    _fields_ = (
        ("ts_ns", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("probe", ctypes.c_uint32),
        ("start", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
    )


# One trace record: the event's fields in order, little endian, no padding.
RECORD = struct.Struct("<QIIQQ")

"""The hint-trace file: what the probes saw, for replay and analysis.

Layout (little endian), version 1::

    header  24 bytes  magic b"PYKSMHT\\n", u16 version, u16 record size (32),
                      u32 reserved (0), u64 creation time (Unix ns)
    record  32 bytes  u64 ts_ns (CLOCK_MONOTONIC), u32 tgid, u32 probe,
                      u64 start (virtual address in tgid), u64 len (bytes read)

``probe`` ids are those of ``bpf/read_common.h`` (``PROBE_NAMES``). Records
are appended whole with O_APPEND, so a file can collect several recordings
and readers never see a torn record unless the writer died mid-write(2).
A file that does not start with the magic, has another version, or ends in
a partial record is refused with a one-line error.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyksm.errors import PyksmError
from pyksm.probes.loader import PROBE_NAMES, ReadEvent

__all__ = ["HEADER", "MAGIC", "RECORD", "VERSION", "TraceWriter", "read_trace"]

MAGIC = b"PYKSMHT\n"
VERSION = 1
HEADER = struct.Struct("<8sHHIQ")
RECORD = struct.Struct("<QIIQQ")


@dataclass(frozen=True)
class TraceInfo:
    path: Path
    version: int
    created_ns: int
    records: int


def _check_header(path: Path, head: bytes) -> int:
    """Validate a header; return its creation time."""
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise PyksmError(f"{path}: not a pyksm hint trace (bad magic)")
    if len(head) < HEADER.size:
        raise PyksmError(
            f"{path}: truncated hint trace (header is {len(head)} of {HEADER.size} bytes)"
        )
    _, version, rsize, _, created = HEADER.unpack(head[: HEADER.size])
    if version != VERSION or rsize != RECORD.size:
        raise PyksmError(
            f"{path}: hint trace version {version} (record {rsize} bytes); "
            f"this pyksm reads version {VERSION}"
        )
    return int(created)


def _check_size(path: Path, size: int) -> int:
    body = size - HEADER.size
    if body % RECORD.size:
        raise PyksmError(
            f"{path}: truncated hint trace: {body // RECORD.size} records then "
            f"{body % RECORD.size} stray bytes"
        )
    return body // RECORD.size


def inspect(path: Path) -> TraceInfo:
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise PyksmError(f"{path}: {e.strerror}") from None
    created = _check_header(path, head)
    return TraceInfo(path, VERSION, created, _check_size(path, size))


class TraceWriter:
    """Append records to a trace (new, or an existing valid one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise PyksmError(f"{path}: {e.strerror}") from None
        size = os.fstat(self.fd).st_size
        if size == 0:
            os.write(self.fd, HEADER.pack(MAGIC, VERSION, RECORD.size, 0, time.time_ns()))
        else:
            try:
                inspect(path)
            except PyksmError:
                os.close(self.fd)
                raise
        self._buf: list[bytes] = []
        self.written = 0

    def add(self, events: Iterable[ReadEvent]) -> None:
        self._buf.extend(RECORD.pack(e.ts_ns, e.tgid, e.probe, e.start, e.length) for e in events)

    def flush(self) -> None:
        """Write the buffered records whole (one write per 64 KiB of records)."""
        step = 2048
        for i in range(0, len(self._buf), step):
            chunk = self._buf[i : i + step]
            os.write(self.fd, b"".join(chunk))
            self.written += len(chunk)
        self._buf = []

    def close(self) -> None:
        self.flush()
        os.close(self.fd)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trace(path: Path) -> Iterator[ReadEvent]:
    """Every record of a trace, in file order; errors before yielding anything."""
    info = inspect(path)
    with open(path, "rb") as f:
        f.seek(HEADER.size)
        remaining = info.records
        while remaining:
            data = f.read(RECORD.size * min(remaining, 4096))
            if not data or len(data) % RECORD.size:
                raise PyksmError(f"{path}: changed while being read")
            for ts, tgid, probe, start, length in RECORD.iter_unpack(data):
                yield ReadEvent(ts, tgid, probe, start, length)
            remaining -= len(data) // RECORD.size


def probe_name(probe: int) -> str:
    return PROBE_NAMES.get(probe, f"probe{probe}")

"""The hint-trace file: what the probes saw, for replay and analysis.

Layout (little endian), version 1::

    header  24 bytes  magic b"PYKSMHT\\n", u16 version, u16 record size (32),
                      u32 reserved (0), u64 creation time (Unix ns)
    record  32 bytes  u64 ts_ns (CLOCK_MONOTONIC), u32 tgid, u32 probe,
                      u64 start (virtual address in tgid), u64 len (bytes read)

``probe`` ids are those of ``bpf/read_common.h`` (``PROBE_NAMES``). Records
are appended whole with O_APPEND, so a file can collect several recordings
and readers never see a torn record unless the writer died mid-write(2); on
a full disk the writer cuts the file back to its last whole record.
A file that does not start with the magic, has another version, or ends in
a partial record is refused with a one-line error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pyksm.errors import PyksmError
from pyksm.events import RECORD, ReadEvent, probe_name

__all__ = ["HEADER", "MAGIC", "RECORD", "VERSION", "TraceWriter", "probe_name", "read_trace"]

MAGIC = b"PYKSMHT\n"
VERSION = 1
HEADER = struct.Struct("<8sHHIQ")


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
        # O_NONBLOCK: a FIFO opens at once (and is refused) instead of waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise PyksmError(f"{path}: not a regular file")
            head = f.read(HEADER.size)
            size = st.st_size
    except OSError as e:
        raise PyksmError(f"{path}: {e.strerror}") from None
    created = _check_header(path, head)
    return TraceInfo(path, VERSION, created, _check_size(path, size))


class TraceWriter:
    """Append records to a trace (new, or an existing valid one).

    A new file is created 0600: it tells which process read what, when.
    Writes are whole records: when the disk fills, the file is cut back to
    the last whole record and the writer raises one PyksmError saying how
    many records it kept.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_NONBLOCK: a FIFO is refused (ENXIO, or not a regular file below) at
        # once instead of waiting for a reader; writes to a regular file never block.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            self.fd = os.open(path, flags, 0o600)
        except OSError as e:
            why = "not a regular file" if e.errno == errno.ENXIO else e.strerror
            raise PyksmError(f"{path}: {why}") from None
        self._buf: list[bytes] = []
        self.written = 0
        self.created = False
        self.write_failed = False
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode):
                raise PyksmError(f"{path}: not a regular file")
            self.size = st.st_size
            self.created = self.size == 0
            if self.size == 0:
                self._write(HEADER.pack(MAGIC, VERSION, RECORD.size, 0, time.time_ns()))
            else:
                inspect(path)
        except BaseException:
            os.close(self.fd)
            raise

    def _write(self, data: bytes) -> None:
        """Write ``data`` whole, or cut the file back to where it was and raise."""
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError as e:
            self._buf = []
            self.write_failed = True
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise PyksmError(
                f"{self.path}: {e.strerror}: stopped after {self.written} records "
                "(the file ends on a whole record)"
            ) from None
        self.size += len(data)

    def add(self, events: Iterable[ReadEvent]) -> None:
        self._buf.extend(RECORD.pack(e.ts_ns, e.tgid, e.probe, e.start, e.length) for e in events)

    def flush(self) -> None:
        """Write the buffered records whole (one write per 64 KiB of records)."""
        step = 2048
        buf, self._buf = self._buf, []
        for i in range(0, len(buf), step):
            chunk = buf[i : i + step]
            self._write(b"".join(chunk))
            self.written += len(chunk)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self.fd)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self._buf = []  # failing already: close without another write
        self.close()
        if exc_type is not None and self.created and self.written == 0 and not self.write_failed:
            # The run failed before it recorded anything (probes, targets): no file.
            self.path.unlink(missing_ok=True)


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

"""Send KSM++ hints to the kernel through one of its two intakes.

- ``madvise``: ``process_madvise(pidfd, iovec, n, MADV_KSM_HINT, 0)``. Works
  under kernel lockdown (no debugfs), names each target by a pidfd that is
  opened once and kept, so a pid that is reused after its process exited is
  never hinted. Ranges are widened to page boundaries, as the advice needs.
- ``debugfs``: batched binary writes to ``ksm/hints_raw`` (and text lines to
  ``ksm/hints``), naming targets by pid.

Both queue the records of a batch in order up to the first invalid one: the
debugfs write comes back short (the bytes of the records before it), and
process_madvise returns the bytes of the ranges before it. The writers then
retry from the failed record, which fails alone with its errno; they count
it by errno name and go on with the rest, so one bad record (a target that
exited a moment ago: ESRCH) never costs the hints of the others.

``open_intake("auto")`` picks madvise where the kernel has it, debugfs
otherwise.
"""

from __future__ import annotations

import array
import ctypes
import errno
import itertools
import mmap
import os
import subprocess
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

from pyksm.errors import PyksmError
from pyksm.kernel import wire

DEBUGFS = Path("/sys/kernel/debug")
HINTS_RAW = DEBUGFS / "ksm" / "hints_raw"
HINTS_TEXT = DEBUGFS / "ksm" / "hints"
# Records per write(): the kernel bounds one write at 4096 records.
MAX_BATCH = 1024
# iovecs per process_madvise(): UIO_MAXIOV.
MAX_IOV = 1024
# The advice, from the series' include/uapi/asm-generic/mman-common.h.
MADV_KSM_HINT = 26
# x86_64 and the generic syscall table agree on these.
SYS_MADVISE = 28
SYS_PROCESS_MADVISE = 440
PAGE = mmap.PAGESIZE

IntakeName = Literal["debugfs", "madvise", "auto"]
INTAKES: tuple[str, ...] = ("auto", "madvise", "debugfs")

# errnos that reject one record but leave the intake usable.
RECORD_ERRNOS = (
    errno.ESRCH,
    errno.EOPNOTSUPP,
    errno.EINVAL,
    errno.E2BIG,
    errno.ERANGE,
    errno.EFAULT,
    errno.EOVERFLOW,
    errno.EPERM,
)


def errno_name(code: int) -> str:
    """The name the kernel's documentation uses (EOPNOTSUPP, not its alias ENOTSUP)."""
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code, str(code))


class HintSink(Protocol):
    """What the controller needs of an intake."""

    name: str
    sent: int
    writes: int
    rejected: Counter[str]

    def send(self, hints: Sequence[wire.Hint]) -> int: ...

    def close(self) -> None: ...


def ensure_debugfs() -> None:
    if (DEBUGFS / "ksm").is_dir():
        return
    if not os.path.ismount(DEBUGFS):
        done = subprocess.run(
            ["mount", "-t", "debugfs", "none", str(DEBUGFS)], capture_output=True, text=True
        )
        if done.returncode != 0 and not (DEBUGFS / "ksm").is_dir():
            why = (done.stderr or done.stdout).strip().splitlines()
            raise PyksmError(
                f"mounting debugfs on {DEBUGFS} failed: {why[-1] if why else done.returncode}",
                hint="under kernel lockdown debugfs is refused: use --intake madvise",
            )
    if not (DEBUGFS / "ksm").is_dir():
        raise PyksmError(
            f"{DEBUGFS / 'ksm'} is missing: this kernel has no KSM++ hint interface",
            hint="boot the patched kernel: pyksm vm run -- ...",
        )


class HintWriter:
    """Batched binary writes to debugfs ``ksm/hints_raw``; counts what was rejected."""

    name = "debugfs"

    def __init__(self, path: Path = HINTS_RAW) -> None:
        if path == HINTS_RAW:
            ensure_debugfs()
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except PermissionError:
            raise PyksmError(f"{path}: permission denied (root only)") from None
        except FileNotFoundError:
            raise PyksmError(f"{path} not found: not a KSM++ kernel") from None
        self.sent = 0
        self.writes = 0
        self.rejected: Counter[str] = Counter()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> HintWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, hints: Sequence[wire.Hint]) -> int:
        """Send ``hints``; return how many the kernel accepted."""
        accepted = 0
        for i in range(0, len(hints), MAX_BATCH):
            accepted += self._send(hints[i : i + MAX_BATCH])
        return accepted

    def _send(self, batch: Sequence[wire.Hint]) -> int:
        data = wire.pack_many(batch)
        accepted = 0
        pos = 0
        while pos < len(data):
            try:
                self.writes += 1
                n = os.write(self.fd, data[pos:])
            except OSError as e:
                if e.errno not in RECORD_ERRNOS:
                    raise PyksmError(
                        f"writing hints: {os.strerror(e.errno or errno.EIO)}"
                    ) from None
                # The first record of this write failed alone: skip it.
                self.rejected[errno_name(e.errno or 0)] += 1
                pos += wire.RECORD_SIZE
                continue
            if n <= 0 or n % wire.RECORD_SIZE:
                raise PyksmError(f"hint write returned {n} of {len(data) - pos} bytes")
            accepted += n // wire.RECORD_SIZE
            pos += n
        self.sent += accepted
        return accepted


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args: object) -> int:
    ret = int(_libc.syscall(*args))
    if ret < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return ret


def iovecs(ranges: Sequence[tuple[int, int]]) -> ctypes.Array[_IoVec]:
    """A ``struct iovec`` array of ``(start, length)`` ranges.

    Built over one flat array of machine words: a ctypes structure made per
    range costs about a microsecond each, which for UIO_MAXIOV ranges a call
    made the Python side, not the kernel, the limit of the intake.
    """
    flat = array.array("Q", itertools.chain.from_iterable(ranges))
    return (_IoVec * len(ranges)).from_buffer(flat)  # keeps ``flat`` alive


def process_madvise_iov(pidfd: int, iov: ctypes.Array[_IoVec], advice: int) -> int:
    """``process_madvise(2)`` on a ready iovec array; bytes advised or OSError."""
    return _syscall(
        ctypes.c_long(SYS_PROCESS_MADVISE),
        ctypes.c_int(pidfd),
        iov,
        ctypes.c_size_t(len(iov)),
        ctypes.c_int(advice),
        ctypes.c_uint(0),
    )


def process_madvise(pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
    """``process_madvise(2)`` on ``(start, length)`` ranges; bytes advised or OSError."""
    return process_madvise_iov(pidfd, iovecs(ranges), advice)


def madvise_supported() -> bool:
    """Whether this kernel knows MADV_KSM_HINT: ``madvise(0, 0, advice)`` is EINVAL
    for an unknown advice, and 0 for a known one (an empty range touches nothing)."""
    try:
        _syscall(
            ctypes.c_long(SYS_MADVISE),
            ctypes.c_void_p(0),
            ctypes.c_size_t(0),
            ctypes.c_int(MADV_KSM_HINT),
        )
    except OSError:
        return False
    return True


def page_range(start: int, length: int) -> tuple[int, int]:
    """``(start, length)`` widened to page boundaries, as the advice requires."""
    first = start & ~(PAGE - 1)
    end = (start + length + PAGE - 1) & ~(PAGE - 1)
    return first, end - first


class MadviseWriter:
    """``process_madvise(MADV_KSM_HINT)`` per target, through pidfds kept open."""

    name = "madvise"

    def __init__(self) -> None:
        if not madvise_supported():
            raise PyksmError(
                "this kernel has no MADV_KSM_HINT",
                hint="boot the KSM++ kernel (pyksm vm run), or use --intake debugfs",
            )
        self.pidfds: dict[int, int] = {}
        self.gone: set[int] = set()
        self.sent = 0
        self.writes = 0
        self.rejected: Counter[str] = Counter()

    def close(self) -> None:
        for fd in self.pidfds.values():
            os.close(fd)
        self.pidfds.clear()

    def __enter__(self) -> MadviseWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pidfd(self, pid: int) -> int | None:
        """The pidfd of ``pid``, opened at its first hint; None once it is gone."""
        if pid in self.gone:
            return None
        fd = self.pidfds.get(pid)
        if fd is None:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                self.gone.add(pid)
                return None
            self.pidfds[pid] = fd
        return fd

    def forget(self, pid: int) -> None:
        """The target exited: close its pidfd; later hints for the pid are refused."""
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            os.close(fd)
        self.gone.add(pid)

    def send(self, hints: Sequence[wire.Hint]) -> int:
        by_pid: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
        for h in hints:
            if h.flags or h.length <= 0 or h.start < 0 or h.pid <= 0:
                self.rejected["EINVAL"] += 1
                continue
            by_pid[h.pid].append(page_range(h.start, h.length))
        accepted = 0
        for pid, ranges in by_pid.items():
            for i in range(0, len(ranges), MAX_IOV):
                accepted += self._send(pid, ranges[i : i + MAX_IOV])
        self.sent += accepted
        return accepted

    def _send(self, pid: int, ranges: list[tuple[int, int]]) -> int:
        fd = self.pidfd(pid)
        if fd is None:
            self.rejected["ESRCH"] += len(ranges)
            return 0
        accepted = 0
        pos = 0
        while pos < len(ranges):
            try:
                self.writes += 1
                done = process_madvise(fd, ranges[pos:], MADV_KSM_HINT)
            except OSError as e:
                if e.errno == errno.ESRCH:
                    self.forget(pid)
                    self.rejected["ESRCH"] += len(ranges) - pos
                    return accepted
                if e.errno not in RECORD_ERRNOS:
                    raise PyksmError(
                        f"process_madvise(MADV_KSM_HINT): {os.strerror(e.errno or errno.EIO)}"
                    ) from None
                self.rejected[errno_name(e.errno or 0)] += 1
                pos += 1
                continue
            # ``done`` bytes: whole ranges, from ``pos`` on.
            while pos < len(ranges) and done >= ranges[pos][1]:
                done -= ranges[pos][1]
                pos += 1
                accepted += 1
        return accepted


def open_intake(kind: str = "auto") -> HintWriter | MadviseWriter:
    """The intake named ``kind``; ``auto`` prefers madvise where the kernel has it."""
    if kind not in INTAKES:
        raise PyksmError(f"unknown intake {kind!r}: choose one of {', '.join(INTAKES)}")
    if kind == "debugfs":
        return HintWriter()
    try:
        return MadviseWriter()  # probes the kernel for MADV_KSM_HINT once
    except PyksmError:
        if kind == "madvise":
            raise
    return HintWriter()


def send_text(lines: Sequence[str], path: Path = HINTS_TEXT) -> None:
    """Write text hint lines in one write; a short write names the first bad line."""
    if path == HINTS_TEXT:
        ensure_debugfs()
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        pos = 0
        while pos < len(data):
            pos += os.write(fd, data[pos:])
    except OSError as e:
        bad = data[pos:].split(b"\n", 1)[0].decode(errors="replace")
        raise PyksmError(f"{path}: {os.strerror(e.errno or errno.EIO)} for {bad!r}") from None
    finally:
        os.close(fd)

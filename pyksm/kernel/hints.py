"""Send KSM++ hints to the kernel: debugfs ``ksm/hints_raw`` (binary, batched)
and ``ksm/hints`` (text, one ``<pid> <start> <len>`` per line).

The kernel validates a whole write before queueing anything, so one bad
record (a target that exited: ESRCH; a target not under KSM: EOPNOTSUPP)
rejects its batch. ``HintWriter`` then bisects the batch so the good records
still go in, and counts the rejected ones by errno.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pyksm.errors import PyksmError
from pyksm.kernel import wire

DEBUGFS = Path("/sys/kernel/debug")
HINTS_RAW = DEBUGFS / "ksm" / "hints_raw"
HINTS_TEXT = DEBUGFS / "ksm" / "hints"
# Records per write(): the kernel bounds one write; stay well inside it.
MAX_BATCH = 1024
# errnos that reject one record but leave the interface usable.
RECORD_ERRNOS = (
    errno.ESRCH,
    errno.EOPNOTSUPP,
    errno.EINVAL,
    errno.E2BIG,
    errno.ERANGE,
    errno.EFAULT,
    errno.EOVERFLOW,
)


def errno_name(code: int) -> str:
    """The name the kernel's documentation uses (EOPNOTSUPP, not its alias ENOTSUP)."""
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code, str(code))


def ensure_debugfs() -> None:
    if (DEBUGFS / "ksm").is_dir():
        return
    if not os.path.ismount(DEBUGFS):
        subprocess.run(["mount", "-t", "debugfs", "none", str(DEBUGFS)], capture_output=True)
    if not (DEBUGFS / "ksm").is_dir():
        raise PyksmError(
            f"{DEBUGFS / 'ksm'} is missing: this kernel has no KSM++ hint interface",
            hint="boot the patched kernel: pyksm vm run -- ...",
        )


class HintWriter:
    """Batched binary writes to ``ksm/hints_raw``; counts what was rejected."""

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
        os.close(self.fd)

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
        if not batch:
            return 0
        data = wire.pack_many(batch)
        try:
            self.writes += 1
            n = os.write(self.fd, data)
        except OSError as e:
            if e.errno not in RECORD_ERRNOS:
                raise PyksmError(f"writing hints: {os.strerror(e.errno or errno.EIO)}") from None
            if len(batch) == 1:
                self.rejected[errno_name(e.errno or 0)] += 1
                return 0
            mid = len(batch) // 2
            return self._send(batch[:mid]) + self._send(batch[mid:])
        if n != len(data):
            raise PyksmError(f"short hint write: {n} of {len(data)} bytes")
        self.sent += len(batch)
        return len(batch)


def send_text(lines: Sequence[str], path: Path = HINTS_TEXT) -> None:
    """Write text hint lines in one write (the kernel parses the whole buffer)."""
    if path == HINTS_TEXT:
        ensure_debugfs()
    data = "".join(line.rstrip("\n") + "\n" for line in lines).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    except OSError as e:
        raise PyksmError(f"{path}: {os.strerror(e.errno or errno.EIO)}") from None
    finally:
        os.close(fd)

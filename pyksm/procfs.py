"""Reading /proc: a process's command name and its mappings (smaps).

One parser for ``/proc/PID/smaps`` serves the collector (which memory may be
hinted), the snapshotter (which VMAs to hash) and the guest drivers (where
guest RAM is).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pyksm.errors import PyksmError

__all__ = ["PROC", "Mapping", "comm", "mergeable_spans", "parse_smaps", "read_smaps"]

PROC = Path("/proc")
# start-end perms offset dev inode [path]
_MAP_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


@dataclass
class Mapping:
    """One VMA of /proc/PID/smaps."""

    start: int
    end: int
    perms: str
    path: str = ""
    vmflags: list[str] = field(default_factory=list)

    @property
    def mergeable(self) -> bool:
        """MADV_MERGEABLE (``mg`` in VmFlags)."""
        return "mg" in self.vmflags


def comm(pid: int, proc: Path = PROC) -> str | None:
    """The command name of ``pid`` (/proc/PID/comm), or None if it cannot be read."""
    try:
        return (proc / str(pid) / "comm").read_text().rstrip("\n")
    except OSError:
        return None


def parse_smaps(text: str) -> list[Mapping]:
    """Every mapping in smaps text, with its VmFlags."""
    maps: list[Mapping] = []
    for line in text.splitlines():
        m = _MAP_LINE.match(line)
        if m:
            maps.append(Mapping(int(m[1], 16), int(m[2], 16), m[3], m[4].strip()))
        elif line.startswith("VmFlags:") and maps:
            maps[-1].vmflags.extend(line.split()[1:])
    return maps


def read_smaps(pid: int, proc: Path = PROC) -> str:
    """The smaps text of ``pid``; a missing or unreadable process is a PyksmError."""
    try:
        return (proc / str(pid) / "smaps").read_text()
    except FileNotFoundError:
        raise PyksmError(f"no process {pid}") from None
    except PermissionError:
        raise PyksmError(f"cannot read /proc/{pid}/smaps: run as root or as its owner") from None
    except ProcessLookupError:
        raise PyksmError(f"process {pid} exited") from None
    except OSError as e:
        raise PyksmError(f"cannot read /proc/{pid}/smaps: {e.strerror}") from None


def mergeable_spans(smaps_text: str, size: int | None = None) -> list[tuple[int, int]]:
    """Sorted writable MADV_MERGEABLE spans (of exactly ``size`` bytes when given)."""
    spans = [
        (m.start, m.end)
        for m in parse_smaps(smaps_text)
        if m.mergeable and m.perms.startswith("rw") and (size is None or m.end - m.start == size)
    ]
    return sorted(spans)

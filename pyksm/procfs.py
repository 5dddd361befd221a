"""Reading /proc: a process's command name and its mappings (smaps), the CPU
line of /proc/stat, chosen counters of /proc/vmstat.

One parser for ``/proc/PID/smaps`` serves the collector (which memory may be
hinted), the snapshotter (which VMAs to hash) and the guest drivers (where
guest RAM is).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyksm.errors import PyksmError

__all__ = [
    "PROC",
    "CpuTimes",
    "Mapping",
    "comm",
    "cpu_times",
    "mergeable_spans",
    "parse_cpu_times",
    "parse_smaps",
    "parse_vmstat",
    "read_smaps",
    "vmstat",
]

PROC = Path("/proc")
# start-end perms offset dev inode [path]
_MAP_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


@dataclass(frozen=True)
class CpuTimes:
    """The first line of /proc/stat: all CPUs' time, in ticks (USER_HZ)."""

    total: int
    idle: int  # idle + iowait
    steal: int

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.total - other.total, self.idle - other.idle, self.steal - other.steal)


def parse_cpu_times(text: str) -> CpuTimes:
    """``cpu user nice system idle iowait irq softirq steal [guest guest_nice]``;
    guest time is part of user time already and not added again."""
    f = text.split("\n", 1)[0].split()
    if len(f) < 5 or f[0] != "cpu":
        raise PyksmError(f"/proc/stat: first line is not the cpu line: {text[:60]!r}")
    try:
        ticks = [int(x) for x in f[1:9]]
    except ValueError:
        raise PyksmError(f"/proc/stat: not numbers: {text[:60]!r}") from None
    ticks += [0] * (8 - len(ticks))
    return CpuTimes(total=sum(ticks), idle=ticks[3] + ticks[4], steal=ticks[7])


def cpu_times(proc: Path = PROC) -> CpuTimes:
    return parse_cpu_times((proc / "stat").read_text())


def parse_vmstat(text: str, names: Iterable[str]) -> dict[str, int]:
    """The ``names`` among /proc/vmstat's ``name value`` lines; a name the
    kernel does not count (e.g. the events, without CONFIG_VM_EVENT_COUNTERS)
    is left out, not 0."""
    wanted = set(names)
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            try:
                out[name] = int(value)
            except ValueError:
                raise PyksmError(f"/proc/vmstat: {name} is not a number: {value!r:.40}") from None
    return out


def vmstat(names: Iterable[str], proc: Path = PROC) -> dict[str, int]:
    """The ``names`` of /proc/vmstat that this kernel has (see parse_vmstat)."""
    try:
        text = (proc / "vmstat").read_text()
    except OSError as e:
        raise PyksmError(f"cannot read {proc / 'vmstat'}: {e.strerror}") from None
    return parse_vmstat(text, names)


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

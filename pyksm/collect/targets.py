"""Which processes to trace, and which of their memory may be hinted.

Targets are re-resolved on every refresh, so ``--qemu`` and ``--cgroup`` pick
up processes that start after the collector did, and exited ones drop out.

- ``--pid PID``: that process (an error if it does not exist at start);
- ``--cgroup PATH``: every process in that cgroup v2 directory and below;
- ``--qemu``: every ``qemu-system-*`` process.

Hintable memory of a process is its MADV_MERGEABLE mappings (``mg`` in
/proc/PID/smaps VmFlags): for QEMU that is guest RAM, the anonymous ``rw-p``
mapping of exactly ``-m`` bytes (the larger TCG code buffer is not
mergeable). With a QMP socket, the RAM size QEMU reports narrows it further.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyksm.errors import PyksmError
from pyksm.procfs import PROC, comm, mergeable_spans

__all__ = ["MemoryMaps", "TargetSpec"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class TargetSpec:
    pids: Sequence[int] = ()
    cgroups: Sequence[str] = ()
    qemu: bool = False
    proc: Path = PROC
    cgroup_root: Path = CGROUP_ROOT

    def check(self) -> None:
        if not (self.pids or self.cgroups or self.qemu):
            raise PyksmError("no targets: give -p PID, --cgroup PATH or --qemu")
        for pid in self.pids:
            if not (self.proc / str(pid)).is_dir():
                raise PyksmError(f"no process {pid}")
        for cg in self.cgroups:
            if not self._cgroup_dir(cg).is_dir():
                raise PyksmError(f"no cgroup {cg} under {self.cgroup_root}")

    def _cgroup_dir(self, cg: str) -> Path:
        path = Path(cg)
        return (
            path
            if path.is_absolute() and path.is_relative_to(self.cgroup_root)
            else (self.cgroup_root / cg.lstrip("/"))
        )

    def resolve(self) -> set[int]:
        """The tgids to trace now."""
        found = {pid for pid in self.pids if (self.proc / str(pid)).is_dir()}
        for cg in self.cgroups:
            for procs in self._cgroup_dir(cg).rglob("cgroup.procs"):
                try:
                    found.update(int(x) for x in procs.read_text().split())
                except OSError:
                    continue
        if self.qemu:
            for entry in self.proc.iterdir():
                if entry.name.isdigit() and (comm(int(entry.name), self.proc) or "").startswith(
                    "qemu-system"
                ):
                    found.add(int(entry.name))
        return found


@dataclass
class MemoryMaps:
    """Cached hintable spans per tgid; re-read at most every ``refresh_ns`` on a miss."""

    refresh_ns: int = 1_000_000_000
    ram_sizes: dict[int, int] = field(default_factory=dict)  # tgid -> RAM size (QMP)
    proc: Path = PROC
    _spans: dict[int, tuple[int, list[tuple[int, int]]]] = field(default_factory=dict)

    def read(self, tgid: int, now_ns: int) -> list[tuple[int, int]]:
        try:
            text = (self.proc / str(tgid) / "smaps").read_text()
        except OSError:
            text = ""
        spans = mergeable_spans(text, self.ram_sizes.get(tgid))
        self._spans[tgid] = (now_ns, spans)
        return spans

    def spans(self, tgid: int, now_ns: int | None = None) -> list[tuple[int, int]]:
        now = now_ns if now_ns is not None else time.monotonic_ns()
        cached = self._spans.get(tgid)
        if cached is None or now - cached[0] >= self.refresh_ns:
            return self.read(tgid, now)
        return cached[1]

    def forget(self, tgid: int) -> None:
        self._spans.pop(tgid, None)
        self.ram_sizes.pop(tgid, None)

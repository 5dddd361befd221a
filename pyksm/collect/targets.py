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

Both are looked at every refresh (once a second), so what they cost is the
collector's steady cost. Measured on the 2-CPU host (a QEMU guest with
192 MiB of RAM, 333 mappings; 127 processes): reading its smaps takes
3.5-8 ms of CPU, because the kernel walks every page table to count
Rss/Pss, where its maps takes 0.12 ms; a --qemu scan that reads every
process's comm takes 1.8-3.7 ms. Under TCG each costs ten times more. So:

- smaps is read again only when the process's maps changed since the last
  smaps read (a mapping added, removed, split or moved; QEMU's changed
  twice in a 28 s tar, when its I/O threads started) or ``flags_refresh_ns``
  passed (a VmFlags change that leaves the maps as they were, e.g.
  MADV_MERGEABLE on a whole existing mapping, shows within that time);
- a --qemu scan reads the comm of new pids only, and of every pid each
  ``rescan_ns`` (a process that exec()s a QEMU keeps its pid and changes its
  comm: it joins within that time).
"""

from __future__ import annotations

import os
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
    rescan_ns: int = 10_000_000_000  # --qemu: every pid's comm read again this often
    _comms: dict[int, bool] = field(default_factory=dict)  # pid -> is a QEMU (--qemu)
    _scanned_ns: int | None = None

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

    def resolve(self, now_ns: int | None = None) -> set[int]:
        """The tgids to trace now."""
        found = {pid for pid in self.pids if (self.proc / str(pid)).is_dir()}
        for cg in self.cgroups:
            for procs in self._cgroup_dir(cg).rglob("cgroup.procs"):
                try:
                    found.update(int(x) for x in procs.read_text().split())
                except OSError:
                    continue
        if self.qemu:
            found |= self._qemus(time.monotonic_ns() if now_ns is None else now_ns)
        return found

    def _qemus(self, now_ns: int) -> set[int]:
        """Every qemu-system-* process: comm read for new pids, for all every ``rescan_ns``."""
        try:
            pids = {int(n) for n in os.listdir(self.proc) if n.isdigit()}
        except OSError:
            pids = set()
        if self._scanned_ns is None or now_ns - self._scanned_ns >= self.rescan_ns:
            self._comms.clear()
            self._scanned_ns = now_ns
        known = {pid: q for pid, q in self._comms.items() if pid in pids}
        for pid in pids - known.keys():
            known[pid] = (comm(pid, self.proc) or "").startswith("qemu-system")
        self._comms = known
        return {pid for pid, q in known.items() if q}


@dataclass
class _Known:
    """A tgid's hintable spans, and what its maps and smaps said when last read."""

    spans: list[tuple[int, int]]
    maps: bytes | None  # /proc/PID/maps just before the smaps read (None: unreadable)
    smaps_ns: int
    checked_ns: int  # maps last compared


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


@dataclass
class MemoryMaps:
    """Hintable spans per tgid, checked at most every ``refresh_ns`` (see the
    module's notes: smaps is read again only when maps changed, or after
    ``flags_refresh_ns``)."""

    refresh_ns: int = 1_000_000_000
    flags_refresh_ns: int = 30_000_000_000
    ram_sizes: dict[int, int] = field(default_factory=dict)  # tgid -> RAM size (QMP)
    proc: Path = PROC
    smaps_reads: int = 0
    _known: dict[int, _Known] = field(default_factory=dict)

    def read(self, tgid: int, now_ns: int, maps: bytes | None = None) -> list[tuple[int, int]]:
        """Read smaps now; ``maps``: the maps text just read before, else read here."""
        if maps is None:
            maps = _read(self.proc / str(tgid) / "maps")
        smaps = _read(self.proc / str(tgid) / "smaps")
        self.smaps_reads += 1
        text = smaps.decode(errors="replace") if smaps is not None else ""
        spans = mergeable_spans(text, self.ram_sizes.get(tgid))
        self._known[tgid] = _Known(spans, maps, now_ns, now_ns)
        return spans

    def spans(self, tgid: int, now_ns: int | None = None) -> list[tuple[int, int]]:
        now = now_ns if now_ns is not None else time.monotonic_ns()
        k = self._known.get(tgid)
        if k is None or now - k.smaps_ns >= self.flags_refresh_ns:
            return self.read(tgid, now)
        if now - k.checked_ns >= self.refresh_ns:
            k.checked_ns = now
            maps = _read(self.proc / str(tgid) / "maps")
            if maps is None or maps != k.maps:
                return self.read(tgid, now, maps)
        return k.spans

    def forget(self, tgid: int) -> None:
        self._known.pop(tgid, None)
        self.ram_sizes.pop(tgid, None)

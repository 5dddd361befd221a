"""Safe mode: which processes may be hinted at all.

Deduplication is a side channel (README, "Side channels"): a process that
can tell a merged page from an unmerged one by write latency learns that
another process holds the same data. Hints make merges faster and more
predictable, which helps such an attacker too. pyksm cannot stop the
kernel from merging across processes; it can refuse to speed it up:

- allowlist: only listed tgids (or commands) are hinted;
- trust groups: every target belongs to a named group, and the controller
  hints one group's processes only while no process of another group is
  being hinted in the same window, so hints never race merges between two
  groups. Processes in no group are never hinted in safe mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pyksm import procfs

__all__ = ["TrustPolicy"]


@dataclass
class TrustPolicy:
    safe: bool = False
    allow_tgids: frozenset[int] = frozenset()
    allow_comms: frozenset[str] = frozenset()
    groups: Mapping[int, str] = field(default_factory=dict)  # tgid -> group
    window_ns: int = 1_000_000_000
    refused: int = 0
    # tgid -> command name (None: gone); /proc/PID/comm unless a test gives its own.
    comm_of: Callable[[int], str | None] = procfs.comm
    _active: tuple[str, int] | None = None  # (group, last hint ns)
    _comms: dict[int, str | None] = field(default_factory=dict)

    def allowed(self, tgid: int, comm: str | None = None) -> bool:
        """May ``tgid`` be hinted at all?

        A command allowlist needs the target's name: ``comm`` when the caller
        knows it, else the name looked up (once per tgid; :meth:`learn` reads
        it again, :meth:`forget` drops it).
        """
        if not self.safe:
            return True
        if tgid not in self.allow_tgids:
            if not self.allow_comms:
                return False
            name = comm if comm is not None else self._comm(tgid)
            if name not in self.allow_comms:
                return False
        return not self.groups or tgid in self.groups

    def _comm(self, tgid: int) -> str | None:
        if tgid not in self._comms:
            self._comms[tgid] = self.comm_of(tgid)
        return self._comms[tgid]

    def learn(self, tgid: int) -> None:
        """Read ``tgid``'s command name again (it may have exec'd since)."""
        if self.allow_comms:
            self._comms[tgid] = self.comm_of(tgid)

    def forget(self, tgid: int) -> None:
        self._comms.pop(tgid, None)

    def admit(self, tgids: Iterable[int], now_ns: int) -> set[int]:
        """The subset of ``tgids`` whose ranges may be hinted now.

        Outside safe mode: all. In safe mode with groups: the processes of
        one group at a time; another group gets its turn once the active
        group has been quiet for ``window_ns``.
        """
        wanted = set(tgids)
        if not self.safe or not self.groups:
            return wanted
        by_group: dict[str, set[int]] = {}
        for tgid in wanted:
            group = self.groups.get(tgid)
            if group is None:
                self.refused += 1
                continue
            by_group.setdefault(group, set()).add(tgid)
        if not by_group:
            return set()
        active = self._active
        if active is None or now_ns - active[1] >= self.window_ns or active[0] not in by_group:
            if active is not None and now_ns - active[1] < self.window_ns:
                self.refused += sum(len(v) for v in by_group.values())
                return set()
            group = sorted(by_group)[0]
        else:
            group = active[0]
        self._active = (group, now_ns)
        self.refused += sum(len(v) for g, v in by_group.items() if g != group)
        return by_group[group]

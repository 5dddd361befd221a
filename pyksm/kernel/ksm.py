"""Typed access to KSM's sysfs interface and per-process KSM state.

Every knob and counter is listed with the kernel that provides it, and
presence is probed (``Ksm.has``), never guessed from a version number.

- /sys/kernel/mm/ksm/*           global knobs and counters (mm/ksm.c)
- /proc/PID/ksm_stat             per-process counters (6.1+; fields grew later)
- /proc/PID/ksm_merging_pages    pages of PID merged by KSM (6.1+)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from pyksm.deadline import wait_for
from pyksm.errors import PyksmError

SYSFS = Path("/sys/kernel/mm/ksm")


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str  # "int", "bool", "str" (e.g. "1:1", "scan-time")
    writable: bool
    since: str
    doc: str
    monotonic: bool = False  # a count that only grows (a rate over time)


_K = Knob
KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        _K("run", "int", True, "2.6.32", "0 stop, 1 run, 2 unmerge all and stop"),
        _K("pages_to_scan", "int", True, "2.6.32", "pages per ksmd batch"),
        _K("sleep_millisecs", "int", True, "2.6.32", "ksmd sleep between batches"),
        _K("merge_across_nodes", "bool", True, "3.9", "merge pages of different NUMA nodes"),
        _K("max_page_sharing", "int", True, "4.13", "max sharers of one KSM page"),
        _K("use_zero_pages", "bool", True, "4.0", "merge empty pages with the zero page"),
        _K("stable_node_chains_prune_millisecs", "int", True, "4.13", "stable chain pruning"),
        _K("smart_scan", "bool", True, "6.7", "skip pages that failed to merge"),
        _K("advisor_mode", "str", True, "6.8", "none or scan-time"),
        _K("advisor_max_cpu", "int", True, "6.8", "advisor CPU ceiling (%)"),
        _K("advisor_min_pages_to_scan", "int", True, "6.8", "advisor lower bound"),
        _K("advisor_max_pages_to_scan", "int", True, "6.8", "advisor upper bound"),
        _K("advisor_target_scan_time", "int", True, "6.8", "advisor target (s)"),
        _K("pages_shared", "int", False, "2.6.32", "KSM pages in use"),
        _K("pages_sharing", "int", False, "2.6.32", "sites sharing them (memory saved)"),
        _K("pages_unshared", "int", False, "2.6.32", "unique pages checked repeatedly"),
        _K("pages_volatile", "int", False, "2.6.32", "pages changing too fast to merge"),
        _K("pages_skipped", "int", False, "6.7", "pages smart_scan skipped", monotonic=True),
        _K("pages_scanned", "int", False, "6.8", "pages scanned (all time)", monotonic=True),
        _K("full_scans", "int", False, "2.6.32", "completed full scans", monotonic=True),
        _K("stable_node_chains", "int", False, "4.13", "stable chains"),
        _K("stable_node_dups", "int", False, "4.13", "stable dups"),
        _K("ksm_zero_pages", "int", False, "6.10", "pages merged with the zero page"),
        _K("general_profit", "int", False, "6.7", "bytes saved minus metadata"),
        # KSM++ hint series (kernel-patches/), CONFIG_KSM_HINTS
        _K("hint_capacity", "int", True, "KSM++", "hint stack records (0 = hints off)"),
        _K("hint_interleave", "str", True, "KSM++", "H:L hint to linear steps per batch"),
        _K("hint_max_age_ms", "int", True, "KSM++", "hints older than this are dropped"),
        _K("hint_skip_volatility", "bool", True, "KSM++", "hinted pages skip the volatility gate"),
        _K("hints_received", "int", False, "KSM++", "records accepted", monotonic=True),
        _K("hints_invalid", "int", False, "KSM++", "records rejected", monotonic=True),
        _K("hints_pending", "int", False, "KSM++", "records in the stack now"),
        _K(
            "hints_dropped_overflow",
            "int",
            False,
            "KSM++",
            "overwritten by newer hints",
            monotonic=True,
        ),
        _K("hints_dropped_age", "int", False, "KSM++", "expired unprocessed", monotonic=True),
        _K(
            "hints_dropped_stale",
            "int",
            False,
            "KSM++",
            "target mm gone or not under KSM",
            monotonic=True,
        ),
        _K(
            "hints_dropped_flush",
            "int",
            False,
            "KSM++",
            "flushed (run=2, capacity change)",
            monotonic=True,
        ),
        _K(
            "hint_pages_scanned",
            "int",
            False,
            "KSM++",
            "pages ksmd visited through hints",
            monotonic=True,
        ),
        _K("hint_pages_merged", "int", False, "KSM++", "hinted visits that merged", monotonic=True),
        *(
            _K(f"hint_pages_failed_{cause}", "int", False, "KSM++", doc, monotonic=True)
            for cause, doc in (
                ("unmapped", "failed hinted merges: page gone from its PTE"),
                ("locked", "failed hinted merges: folio lock busy"),
                ("split", "failed hinted merges: large folio not split"),
                ("lru", "failed hinted merges: extra ref off the LRU (per-CPU batch)"),
                ("refs", "failed hinted merges: extra ref (GUP, pin, I/O)"),
                ("changed", "failed hinted merges: written before write protection"),
                ("nomem", "failed hinted merges: no stable node"),
            )
        ),
        _K(
            "hint_lru_drains",
            "int",
            False,
            "KSM++",
            "LRU drains to retry a failed hinted merge",
            monotonic=True,
        ),
    )
}
FAILED_PREFIX = "hint_pages_failed_"
HINT_KNOBS = tuple(n for n, k in KNOBS.items() if k.since == "KSM++")
STATS = tuple(n for n, k in KNOBS.items() if not k.writable)  # read-only values
MONOTONIC = frozenset(n for n, k in KNOBS.items() if k.monotonic)

# What the kernel's knob types hold: pages_to_scan and sleep_millisecs are
# unsigned ints, max_page_sharing an int.
UINT_MAX = 2**32 - 1
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class MergeFailures:
    """Hinted visits whose merge with a partner failed, by cause
    (``hint_pages_failed_<cause>``): absolute counts, or a delta of two."""

    unmapped: int = 0  # no longer mapped by a PTE where its rmap_item says
    locked: int = 0  # folio lock held elsewhere
    split: int = 0  # large folio could not be split
    lru: int = 0  # extra reference while off the LRU: per-CPU LRU batch, isolated
    refs: int = 0  # extra reference on an LRU folio: GUP, pin, I/O in flight
    changed: int = 0  # written between comparison and write protection
    nomem: int = 0  # no memory for a stable tree node

    @classmethod
    def causes(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def counter_names(cls) -> tuple[str, ...]:
        """The sysfs files, in cause order."""
        return tuple(FAILED_PREFIX + c for c in cls.causes())

    @classmethod
    def from_counters(cls, counters: Mapping[str, object]) -> MergeFailures | None:
        """From a mapping of counter name to value (a sysfs snapshot, a sample);
        None unless every cause is there as an int (a kernel without them)."""
        values: dict[str, int] = {}
        for cause, name in zip(cls.causes(), cls.counter_names(), strict=True):
            v = counters.get(name)
            if not isinstance(v, int) or isinstance(v, bool):
                return None
            values[cause] = v
        return cls(**values)

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {c: int(getattr(self, c)) for c in self.causes()}

    def __sub__(self, other: MergeFailures) -> MergeFailures:
        return MergeFailures(**{c: getattr(self, c) - getattr(other, c) for c in self.causes()})


class Ksm:
    """KSM's sysfs directory (``root`` lets tests point elsewhere)."""

    def __init__(self, root: Path = SYSFS) -> None:
        self.root = root

    def available(self) -> bool:
        return self.root.is_dir()

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    @property
    def hints_supported(self) -> bool:
        return self.has("hint_capacity")

    def read_raw(self, name: str) -> str:
        try:
            return (self.root / name).read_text().strip()
        except FileNotFoundError:
            raise PyksmError(
                f"this kernel has no {self.root / name}"
                + (" (KSM++ hints need the patched kernel)" if name in HINT_KNOBS else "")
            ) from None

    def read(self, name: str) -> int | str:
        raw = self.read_raw(name)
        knob = KNOBS.get(name)
        if knob and knob.kind in ("int", "bool"):
            return int(raw)
        return raw

    def read_int(self, name: str) -> int:
        value = self.read(name)
        if not isinstance(value, int):
            raise PyksmError(f"{self.root / name} is not a number: {value!r}")
        return value

    def merge_failures(self) -> MergeFailures | None:
        """The failed hinted merges by cause; None on a kernel without them."""
        if not self.has(MergeFailures.counter_names()[0]):
            return None
        try:
            return MergeFailures(
                **{
                    c: self.read_int(n)
                    for c, n in zip(
                        MergeFailures.causes(), MergeFailures.counter_names(), strict=True
                    )
                }
            )
        except (PyksmError, ValueError):
            return None

    def write(self, name: str, value: int | str | bool) -> None:
        knob = KNOBS.get(name)
        if knob is not None and not knob.writable:
            raise PyksmError(f"ksm/{name} is a read-only counter")
        text = str(int(value)) if isinstance(value, bool) else str(value)
        try:
            (self.root / name).write_text(text)
        except FileNotFoundError:
            raise PyksmError(f"this kernel has no {self.root / name}") from None
        except OSError as e:
            raise PyksmError(
                f"writing {text!r} to {self.root / name}: {os.strerror(e.errno or errno.EIO)}"
            ) from None

    def unmerge(self, timeout: float = 120.0, then: int = 0) -> None:
        """run=2 (unmerge every KSM page, flush hints), wait until no page is
        shared, then write run=``then``. Raises if the pages stay merged."""
        self.write("run", 2)
        wait_for(
            lambda: self.read_int("pages_shared") == 0 and self.read_int("pages_sharing") == 0,
            timeout,
            "KSM unmerge (run=2): pages_shared and pages_sharing back to 0",
        )
        if then != 2:
            self.write("run", then)

    def state(self) -> dict[str, int | str]:
        """Every knob and counter present on this kernel."""
        out: dict[str, int | str] = {}
        for path in sorted(self.root.iterdir()):
            if path.is_file():
                try:
                    out[path.name] = self.read(path.name)
                except (PyksmError, ValueError, OSError):
                    continue
        return out


def process_stat(pid: int) -> dict[str, int | str]:
    """/proc/PID/ksm_stat as a dict, plus ksm_merging_pages."""
    proc = Path("/proc") / str(pid)
    out: dict[str, int | str] = {}
    try:
        for line in (proc / "ksm_stat").read_text().splitlines():
            key, _, val = line.partition(" ")
            key, val = key.rstrip(":"), val.strip()  # "ksm_mergeable: yes" (6.8+)
            out[key] = int(val) if val.lstrip("-").isdigit() else val
        out["ksm_merging_pages"] = int((proc / "ksm_merging_pages").read_text())
    except FileNotFoundError:
        raise PyksmError(f"no process {pid} (or no KSM per-process stats)") from None
    return out


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a task, in clock ticks (SC_CLK_TCK); None once it is gone."""
    try:
        f = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(f[11]) + int(f[12])


def parse_schedstat(text: str) -> int:
    """The first field of /proc/PID/schedstat: time on a CPU, in ns.

    /proc/PID/stat's utime + stime add up to the same runtime (the kernel
    scales its tick samples to it), but in USER_HZ ticks of 10 ms.
    """
    fields = text.split()
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise PyksmError(f"unexpected /proc/PID/schedstat: {text.strip()[:60]!r}")
    return int(fields[0])


def runtime_ns(pid: int) -> int | None:
    """A task's time on a CPU in ns (needs CONFIG_SCHED_INFO); None once it is gone."""
    try:
        text = (Path("/proc") / str(pid) / "schedstat").read_text()
    except OSError:
        return None
    return parse_schedstat(text)


def ksmd_pid() -> int:
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "ksmd":
                    return int(p.name)
            except OSError:
                continue
    raise PyksmError("no ksmd thread: is CONFIG_KSM set?")


def ksmd_cpu_ticks() -> int:
    """utime + stime of the ksmd kernel thread, in clock ticks (SC_CLK_TCK)."""
    ticks = cpu_ticks(ksmd_pid())
    if ticks is None:
        raise PyksmError("cannot read ksmd's /proc/PID/stat")
    return ticks


def ksmd_runtime_ns() -> int:
    """ksmd's time on a CPU in ns, from /proc/PID/schedstat (CONFIG_SCHED_INFO)."""
    ns = runtime_ns(ksmd_pid())
    if ns is None:
        raise PyksmError("cannot read ksmd's /proc/PID/schedstat (CONFIG_SCHED_INFO?)")
    return ns


def idle_ticks() -> int:
    """Idle + iowait time of all CPUs (the first line of /proc/stat), in ticks."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(f[4]) + int(f[5])

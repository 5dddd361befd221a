"""The results directory's schema, shared by the runner (writer) and the report (reader).

OUTDIR/SCENARIO/config.json, and per mode and repetition
MODE/rep-NN/samples.jsonl (one :class:`Sample` a second) and
MODE/rep-NN/summary.json (one :class:`Summary`). Results written before
repetitions existed have MODE/samples.jsonl and MODE/summary.json: one
repetition, read as repetition 1 (:func:`mode_reps`).
The reader refuses a missing or ill-typed field with one line naming the
file and the field: a renamed key must not be plotted as zeros.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from pyksm.argtypes import no_special_file
from pyksm.errors import PyksmError
from pyksm.probes import ksmd_visits
from pyksm.procfs import CpuTimes, cpu_times

__all__ = [
    "AGENT",
    "BLOCKSTATS",
    "DIAGNOSIS_COUNTERS",
    "IO_PACE_OK",
    "READ_BYTES_SOURCES",
    "VMSTAT_COUNTERS",
    "Diagnosis",
    "Load",
    "Sample",
    "Summary",
    "WorkloadOutcome",
    "mode_reps",
    "read_json",
    "read_samples",
    "read_summary",
    "rep_dir",
]

_NUMBER = (int, float)
# A guest that read less than this share of its set rate was CPU-bound: the
# modes then ran different workloads (the report flags such repetitions).
IO_PACE_OK = 0.95
_REP_DIR = re.compile(r"rep-(\d+)")
# Counters of /proc/vmstat the runner samples every second, beside KSM's
# sysfs values (written flat in samples.jsonl like them).
VMSTAT_COUNTERS = ("cow_ksm",)


def read_json(path: Path) -> Any:
    """A results directory's JSON file (config.json, summary.json, host.json)."""
    no_special_file(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PyksmError(f"{path}: not JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PyksmError(f"{path}: cannot read ({e})") from None


def rep_dir(scenario_dir: Path, mode: str, rep: int) -> Path:
    """Where repetition ``rep`` (from 1) of ``mode`` keeps its files."""
    return scenario_dir / mode / f"rep-{rep:02d}"


def mode_reps(mode_dir: Path) -> list[tuple[int, Path]]:
    """(repetition, directory) of every repetition of a mode that has samples,
    by repetition; a mode directory of the single-run layout (samples.jsonl
    in it) is repetition 1."""
    if (mode_dir / "samples.jsonl").exists():
        return [(1, mode_dir)]
    if not mode_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), d)
        for d in mode_dir.iterdir()
        if (m := _REP_DIR.fullmatch(d.name)) and (d / "samples.jsonl").exists()
    ]
    return sorted(found)


def _take(obj: dict[str, Any], name: str, kinds: tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise PyksmError(f"{where}: field {name!r} is missing")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise PyksmError(
            f"{where}: field {name!r} is {type(value).__name__} {value!r:.40}, expected {want}"
        )
    return value


def _maybe(obj: dict[str, Any], name: str, kinds: tuple[type, ...], where: str) -> Any:
    return _take(obj, name, kinds, where) if obj.get(name) is not None else None


@dataclass
class Sample:
    """One second of a mode's run (a line of samples.jsonl).

    ``counters`` are the KSM values read that second (``pages_sharing`` and
    the others of ``/sys/kernel/mm/ksm``), and for real guests the snapshot
    oracle's disk-block figures (``guests_sharing_file``,
    ``guests_sharing_file_cross``, ``oracle_file_cross``); they are written
    flat, beside the other fields, as before.
    """

    t: float
    pages_sharing: int
    ksmd_ticks: int
    oracle: int
    oracle_file: int
    oracle_anon: int | None = None
    present: int | None = None
    idle_ticks: int | None = None
    cpu_ticks: dict[str, int] = field(default_factory=dict)
    merging: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    _REQUIRED: ClassVar[dict[str, tuple[type, ...]]] = {
        "t": _NUMBER,
        "pages_sharing": (int,),
        "ksmd_ticks": (int,),
        "oracle": (int,),
        "oracle_file": (int,),
    }
    _OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {
        "oracle_anon": (int,),
        "present": (int,),
        "idle_ticks": (int,),
        "cpu_ticks": (dict,),
        "merging": (dict,),
    }

    def to_json(self) -> str:
        row = {k: v for k, v in asdict(self).items() if k != "counters" and v is not None}
        return json.dumps({**self.counters, **row})

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Sample:
        if not isinstance(obj, dict):
            raise PyksmError(f"{where}: a sample is a JSON object, not {type(obj).__name__}")
        got = {n: _take(obj, n, k, where) for n, k in cls._REQUIRED.items()}
        got |= {n: _maybe(obj, n, k, where) for n, k in cls._OPTIONAL.items()}
        for name in ("cpu_ticks", "merging"):
            got[name] = got[name] or {}
        known = {f.name for f in fields(cls)}
        counters: dict[str, int] = {
            k: v
            for k, v in obj.items()
            if k not in known and isinstance(v, int) and not isinstance(v, bool)
        }
        return cls(**got, counters={**counters, "pages_sharing": got["pages_sharing"]})

    def get(self, key: str, default: Any = None) -> Any:
        """A field or a counter by its name in the file."""
        if key in self.counters:
            return self.counters[key]
        value = getattr(self, key, None) if key in self.__dataclass_fields__ else None
        return default if value is None else value


@dataclass
class Load:
    """How loaded the machine the runner ran on was over one repetition's
    measured run: /proc/stat's cpu line (all CPUs) at its start and end."""

    seconds: float
    cpu_ticks: int
    idle_ticks: int  # idle + iowait
    steal_ticks: int

    _REQUIRED: ClassVar[dict[str, tuple[type, ...]]] = {
        "seconds": _NUMBER,
        "cpu_ticks": (int,),
        "idle_ticks": (int,),
        "steal_ticks": (int,),
    }

    @classmethod
    def since(cls, t0: float, stat0: CpuTimes) -> Load:
        """The load from ``t0`` (time.monotonic()) and /proc/stat's ``stat0`` to now."""
        used = cpu_times() - stat0
        return cls(
            seconds=round(time.monotonic() - t0, 3),
            cpu_ticks=used.total,
            idle_ticks=used.idle,
            steal_ticks=used.steal,
        )

    @property
    def idle_fraction(self) -> float | None:
        """Idle share of all CPUs' time (None: no ticks counted)."""
        return self.idle_ticks / self.cpu_ticks if self.cpu_ticks > 0 else None

    @property
    def steal_fraction(self) -> float | None:
        """Share of all CPUs' time the hypervisor gave to others (0 under TCG)."""
        return self.steal_ticks / self.cpu_ticks if self.cpu_ticks > 0 else None

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> Load:
        return cls(**{n: _take(obj, n, k, f"{where} load") for n, k in cls._REQUIRED.items()})


@dataclass(frozen=True)
class Diagnosis:
    """Why sharing is lost: how much counters grew over one repetition's
    measured run (its last sample minus its first); None where the kernel
    lacks the counter (cow_ksm needs CONFIG_VM_EVENT_COUNTERS, the hint
    counters the KSM++ series).

    - cow_ksm: write faults that copied a KSM page (/proc/vmstat, counted in
      do_wp_page, mm/memory.c): merged pages COW-broken, in every process.
    - hints_dropped_*: hint records the kernel dropped unprocessed, by reason
      (/sys/kernel/mm/ksm): overflow (overwritten by newer ones), age (older
      than hint_max_age_ms), stale (their mm gone or no longer under KSM),
      flush (run=2, capacity change).
    - hint_lru_drains: per-CPU LRU drains ksmd did to retry a hinted merge
      that failed on a page still in an LRU batch (/sys/kernel/mm/ksm).
    """

    cow_ksm: int | None = None
    hints_dropped_overflow: int | None = None
    hints_dropped_age: int | None = None
    hints_dropped_stale: int | None = None
    hints_dropped_flush: int | None = None
    hint_lru_drains: int | None = None

    @classmethod
    def between(cls, first: dict[str, int], last: dict[str, int]) -> Diagnosis:
        """From the counters of the first and the last sample."""
        return cls(
            **{
                n: last[n] - first[n] if n in first and n in last else None
                for n in DIAGNOSIS_COUNTERS
            }
        )

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> Diagnosis:
        return cls(**{n: _maybe(obj, n, (int,), f"{where} diagnosis") for n in DIAGNOSIS_COUNTERS})


DIAGNOSIS_COUNTERS = tuple(f.name for f in fields(Diagnosis))


# Where a WorkloadOutcome's read_bytes came from: the agent's DONE (the
# guest's block layer, the workload finished), or QEMU's block statistics
# over QMP (rd_bytes from the command to the run's end: it did not finish).
AGENT = "agent"
BLOCKSTATS = "blockstats"
READ_BYTES_SOURCES = (AGENT, BLOCKSTATS)


@dataclass
class WorkloadOutcome:
    """How one real QEMU guest's workload ended (qemu_runner), an entry of
    summary.json's ``guest_stats``.

    ``done`` True: DONE came; ``read_bytes`` its guest read from the shared
    disk (per the guest's block layer) and ``host_seconds`` from the command
    sent to its DONE (host clock); ``read_bytes_source`` "agent".
    ``done`` False: no DONE came (``error`` says why); when QEMU's block
    statistics were read at the command and at the run's end, the outcome is
    *partial*: ``read_bytes`` what QEMU read for the guest from the shared
    disk between the two, ``host_seconds`` the time between them,
    ``read_bytes_source`` "blockstats". Results written before
    ``read_bytes_source`` existed have none (their DONE figures are the agent's).
    """

    name: str
    command: str
    done: bool
    status: int | None = None
    files: int | None = None
    read_bytes: int | None = None
    host_seconds: float | None = None
    error: str | None = None
    read_bytes_source: str | None = None

    _OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {
        "status": (int,),
        "files": (int,),
        "read_bytes": (int,),
        "host_seconds": _NUMBER,
        "error": (str,),
        "read_bytes_source": (str,),
    }

    @property
    def partial(self) -> bool:
        """It did not finish, and has what its guest read until the run's end."""
        return (
            not self.done
            and self.read_bytes_source == BLOCKSTATS
            and self.read_bytes is not None
            and bool(self.host_seconds)
        )

    @property
    def read_mib_s(self) -> float | None:
        """MiB its guest read per host second: of the whole workload when it
        finished (DONE, status 0, with what it read and how long it took), of
        its part until the run's end when it is ``partial``; None otherwise."""
        finished = self.done and self.status == 0 and self.read_bytes is not None
        if not (finished or self.partial) or self.read_bytes is None:
            return None
        return self.read_bytes / 2**20 / self.host_seconds if self.host_seconds else None

    @staticmethod
    def recorded(obj: Any) -> bool:
        """Whether a guest_stats entry is a workload outcome (not a ballast's
        or a ledger guest's statistics)."""
        return isinstance(obj, dict) and "command" in obj and "done" in obj

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> WorkloadOutcome:
        done = obj.get("done")
        if not isinstance(done, bool):
            raise PyksmError(f"{where}: field 'done' is {type(done).__name__}, expected bool")
        got = {n: _maybe(obj, n, k, where) for n, k in cls._OPTIONAL.items()}
        if got["read_bytes_source"] not in (None, *READ_BYTES_SOURCES):
            raise PyksmError(
                f"{where}: field 'read_bytes_source' is {got['read_bytes_source']!r:.40}, "
                f"expected one of {', '.join(READ_BYTES_SOURCES)}"
            )
        return cls(
            name=_take(obj, "name", (str,), where),
            command=_take(obj, "command", (str,), where),
            done=done,
            **got,
        )


@dataclass
class Summary:
    """How one repetition of one mode ran (summary.json).

    ``rep`` (from 1) and ``load`` are missing in results written before
    repetitions existed, ``diagnosis`` in those written before it (read as
    None).
    """

    mode: str
    clk_tck: int
    lifetimes: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    guests: list[Any] = field(default_factory=list)
    guest_stats: list[Any] = field(default_factory=list)
    io_achieved: list[float | None] = field(default_factory=list)
    scan_rate: dict[str, int] = field(default_factory=dict)
    warm_up: dict[str, Any] = field(default_factory=dict)
    cpus: int | None = None
    hint_visits: dict[str, int] | None = None
    # Which oracle the run's figures came from: "snapshot" (snapshots of real
    # guests' RAM); None: the ledger (the guests' exact content ledgers; also
    # results from before real guests). config.json names it for both.
    # ``validation``: the snapshot oracle's precision and recall
    # (pyksm.experiment.oracle_snapshot).
    oracle: str | None = None
    validation: dict[str, Any] | None = None
    rep: int | None = None
    load: Load | None = None
    diagnosis: Diagnosis | None = None
    # Failed hinted merges by cause over the measured run (kernel counters
    # hint_pages_failed_<cause>, end minus start); None: not recorded.
    merge_failures: dict[str, int] | None = None
    # What each kind of ksmd visit cost over the measured run (--visit-cost),
    # by kind; None: not timed.
    ksmd_visits: dict[str, ksmd_visits.KindCost] | None = None

    _REQUIRED: ClassVar[dict[str, tuple[type, ...]]] = {
        "mode": (str,),
        "clk_tck": (int,),
        "lifetimes": (dict,),
    }
    _OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {
        "config": (dict,),
        "guests": (list,),
        "guest_stats": (list,),
        "io_achieved": (list,),
        "scan_rate": (dict,),
        "warm_up": (dict,),
        "cpus": (int,),
        "hint_visits": (dict,),
        "oracle": (str,),
        "validation": (dict,),
        "rep": (int,),
        "load": (dict,),
        "diagnosis": (dict,),
        "merge_failures": (dict,),
        "ksmd_visits": (dict,),
    }

    @property
    def io_pace(self) -> float | None:
        """The slowest guest's share of its set read rate (None: no guest reads)."""
        achieved = [a for a in self.io_achieved if a is not None]
        return min(achieved) if achieved else None

    @property
    def paced(self) -> bool | None:
        """Every reading guest kept at least IO_PACE_OK of its rate (None: no I/O)."""
        pace = self.io_pace
        return None if pace is None else pace >= IO_PACE_OK

    def to_json(self) -> str:
        doc = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Summary:
        if not isinstance(obj, dict):
            raise PyksmError(f"{where}: a summary is a JSON object, not {type(obj).__name__}")
        got = {n: _take(obj, n, k, where) for n, k in cls._REQUIRED.items()}
        for n, k in cls._OPTIONAL.items():
            value = _maybe(obj, n, k, where)
            if value is not None:
                got[n] = value
        for i, a in enumerate(got.get("io_achieved", [])):
            if a is not None:
                _take({"io_achieved": a}, "io_achieved", _NUMBER, f"{where} [{i}]")
        if "load" in got:
            got["load"] = Load.from_json(got["load"], where)
        if "diagnosis" in got:
            got["diagnosis"] = Diagnosis.from_json(got["diagnosis"], where)
        for cause, n in got.get("merge_failures", {}).items():
            _take({cause: n}, cause, (int,), f"{where} merge_failures")
        if "ksmd_visits" in got:
            got["ksmd_visits"] = ksmd_visits.kind_costs_from_json(got["ksmd_visits"], where)
        for i, g in enumerate(got.get("guest_stats", [])):
            if WorkloadOutcome.recorded(g):
                WorkloadOutcome.from_json(g, f"{where} guest_stats[{i}]")
        return cls(**got)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value

    @property
    def workloads(self) -> list[WorkloadOutcome]:
        """The real QEMU guests' workload outcomes, in guest order (none for
        the ledger scenarios)."""
        return [
            WorkloadOutcome.from_json(g, f"guest_stats[{i}]")
            for i, g in enumerate(self.guest_stats)
            if WorkloadOutcome.recorded(g)
        ]


def read_samples(path: Path) -> list[Sample]:
    """Every whole sample; a torn last line (a run cut short) is left out."""
    rows: list[Sample] = []
    no_special_file(path)
    try:
        with path.open() as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    if fh.readline():
                        raise PyksmError(f"{path}:{lineno}: not a JSON sample") from None
                    continue
                rows.append(Sample.from_json(obj, f"{path}:{lineno}"))
    except FileNotFoundError:
        raise PyksmError(f"{path} missing: not a pyksm results directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PyksmError(f"{path}: cannot read ({e})") from None
    if not rows:
        raise PyksmError(f"{path} holds no samples")
    return rows


def read_summary(path: Path) -> Summary | None:
    """The summary, or None when the mode did not finish (no file)."""
    if not path.exists():
        return None
    return Summary.from_json(read_json(path), str(path))

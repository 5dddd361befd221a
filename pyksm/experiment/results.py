"""The results directory's schema, shared by the runner (writer) and the report (reader).

OUTDIR/SCENARIO/config.json, and per mode MODE/samples.jsonl (one
:class:`Sample` a second) and MODE/summary.json (one :class:`Summary`).
The reader refuses a missing or ill-typed field with one line naming the
file and the field: a renamed key must not be plotted as zeros.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from pyksm.errors import PyksmError

__all__ = ["Sample", "Summary", "read_samples", "read_summary"]

_NUMBER = (int, float)


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
    the others of ``/sys/kernel/mm/ksm``); they are written flat, beside the
    other fields, as before.
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
class Summary:
    """How one mode ran (summary.json)."""

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
    }

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
        return cls(**got)

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None)
        return default if value is None else value


def read_samples(path: Path) -> list[Sample]:
    """Every whole sample; a torn last line (a run cut short) is left out."""
    rows: list[Sample] = []
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
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PyksmError(f"{path}: not JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PyksmError(f"{path}: cannot read ({e})") from None
    return Summary.from_json(obj, str(path))

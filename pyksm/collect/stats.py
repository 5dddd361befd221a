"""``pyksm collect``'s statistics: one dataclass for the collector that writes
them (``--json``) and every parent that reads them (pyksm.collect.process).

A reader refuses a missing or ill-typed field with one line naming it.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pyksm.errors import PyksmError

__all__ = ["CollectStats"]


@dataclass
class CollectStats:
    mode: str  # "live" or "record"
    record: str | None  # the trace file (record mode)
    headers: str  # where bcc's kernel headers came from
    features: str  # what the kernel offers (pyksm.probes.features)
    layer: str
    syscalls: list[str]
    functions: list[str]
    targets_seen: list[int]
    targets_exited: list[int]
    seconds: float
    cpu_seconds: float
    cpu_percent: float
    events: int
    bytes_read: int
    outside_bytes: int  # read outside the targets' hintable memory
    refused_events: int  # the trust policy said no
    hints: int
    hinted_pages: int
    dedup_dropped: int
    rate_dropped_pages: int  # pages of the records the rate cap dropped
    policy_refused: int
    records_written: int
    hints_sent: int
    hint_writes: int
    events_by_probe: dict[str, int] = field(default_factory=dict)
    hints_rejected: dict[str, int] = field(default_factory=dict)
    bpf: dict[str, int] = field(default_factory=dict)
    rate_dropped: dict[str, int] = field(default_factory=dict)  # records, by reason
    # --adaptive-interleave: the knob as found (restored on exit), now, how often it
    # changed, and the law's ticks at each ratio; None/0/{} without it.
    interleave_base: str | None = None
    interleave_now: str | None = None
    interleave_changes: int = 0
    interleave_ticks: dict[str, int] = field(default_factory=dict)
    interrupted: bool | None = None  # None: still running (an interval report)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, obj: Any, where: str = "collector statistics") -> CollectStats:
        if not isinstance(obj, dict):
            raise PyksmError(f"{where}: not a JSON object")
        hints = typing.get_type_hints(cls)
        got: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                if f.name == "interrupted":
                    continue
                raise PyksmError(f"{where}: field {f.name!r} is missing")
            value = obj[f.name]
            if not _is(value, hints[f.name]):
                raise PyksmError(f"{where}: field {f.name!r} is {type(value).__name__}")
            got[f.name] = value
        return cls(**got)


def _is(value: Any, kind: Any) -> bool:
    """Does a JSON value fit the annotation (str, int, float, bool, None, list[X], dict[str, X])?"""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        return any(_is(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_is(v, item) for v in value)
    if origin is dict:
        _, item = typing.get_args(kind)
        return isinstance(value, dict) and all(_is(v, item) for v in value.values())
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)

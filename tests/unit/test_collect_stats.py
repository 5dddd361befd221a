"""pyksm collect's statistics: one dataclass for the writer and the readers."""

from __future__ import annotations

import json

import pytest

from pyksm.collect.stats import CollectStats
from pyksm.errors import PyksmError


def example() -> CollectStats:
    return CollectStats(
        mode="record", record="t.trace", headers="/h", features="layers: syscalls",
        layer="syscalls", syscalls=["pread64"], functions=[], targets_seen=[42],
        targets_exited=[], seconds=1.5, cpu_seconds=0.1, cpu_percent=6.7, events=3,
        bytes_read=12288, outside_bytes=0, refused_events=0, hints=1, hinted_pages=3,
        dedup_dropped=0, rate_dropped_pages=0, policy_refused=0, records_written=3,
        hints_sent=0, hint_writes=0, events_by_probe={"pread64": 3}, bpf={"emitted": 3},
        rate_dropped={"overflow": 2}, interrupted=True,
    )  # fmt: skip


def test_the_json_the_collector_writes_is_what_a_reader_gets() -> None:
    s = example()
    assert CollectStats.from_dict(json.loads(s.to_json(indent=2))) == s


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("events"), "'events' is missing"),
        (lambda d: d.update(events="3"), "'events' is str"),
        (lambda d: d.update(targets_seen=["42"]), "'targets_seen' is list"),
        (lambda d: d.update(interrupted="yes"), "'interrupted' is str"),
    ],
)
def test_a_missing_or_ill_typed_field_is_named(mutate: object, message: str) -> None:
    d = example().to_dict()
    mutate(d)  # type: ignore[operator]
    with pytest.raises(PyksmError, match=message):
        CollectStats.from_dict(d)

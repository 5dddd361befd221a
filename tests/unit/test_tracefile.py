"""The hint-trace format: round trip, append, and refusal of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyksm.cli import main
from pyksm.collect import tracefile
from pyksm.collect.replay import batches
from pyksm.errors import PyksmError
from pyksm.probes.loader import ReadEvent

EVENTS = [ReadEvent(1000 + i, 42, 2, 0x7F0000000000 + i * 4096, 4096) for i in range(5)]


def test_round_trip_and_append(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    with tracefile.TraceWriter(path) as w:
        w.add(EVENTS[:3])
    with tracefile.TraceWriter(path) as w:  # a second recording appends
        w.add(EVENTS[3:])
    assert list(tracefile.read_trace(path)) == EVENTS
    assert tracefile.inspect(path).records == 5


def test_header_layout(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    tracefile.TraceWriter(path).close()
    raw = path.read_bytes()
    assert raw[:8] == b"PYKSMHT\n" and len(raw) == tracefile.HEADER.size == 24
    assert tracefile.RECORD.size == 32


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-5], "truncated hint trace: 4 records then 27 stray bytes"),
        (lambda b: b[:12], "truncated hint trace (header"),
        (lambda b: b"GIF89a" + b[6:], "not a pyksm hint trace"),
        (lambda b: b"", "not a pyksm hint trace"),
        (lambda b: b[:8] + b"\x09\x00" + b[10:], "hint trace version 9"),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, mutate: object, message: str) -> None:
    path = tmp_path / "t.trace"
    with tracefile.TraceWriter(path) as w:
        w.add(EVENTS)
    path.write_bytes(mutate(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(PyksmError, match=message.replace("(", r"\(")):
        list(tracefile.read_trace(path))
    if path.stat().st_size:
        with pytest.raises(PyksmError):
            tracefile.TraceWriter(path)  # never appends to a bad file


def test_cli_exits_2_with_one_line_on_foreign_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "foreign"
    path.write_text("hello, not a trace\n")
    assert main(["trace", "show", str(path)]) == 2
    assert main(["hint", "--replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a pyksm hint trace" in err
    assert main(["trace", "show", str(tmp_path / "missing")]) == 2


def test_replay_batches_follow_timestamps() -> None:
    evs = [ReadEvent(t, 1, 1, 0, 4096) for t in (0, 10, 60, 70, 200)]
    assert [len(b) for b in batches(iter(evs), 50)] == [2, 2, 1]

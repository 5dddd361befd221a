"""The hint-trace format: round trip, append, and refusal of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyksm.cli import main
from pyksm.collect import tracefile
from pyksm.collect.replay import batches
from pyksm.errors import PyksmError
from pyksm.events import ReadEvent

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


def test_new_trace_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    tracefile.TraceWriter(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def _fill_under_a_size_limit(path: str, limit: int, records: int) -> None:
    # The kernel's own short write: past RLIMIT_FSIZE write(2) stops at the
    # limit, then fails with EFBIG (SIGXFSZ ignored), as on a full disk.
    import resource
    import signal
    import sys

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        with tracefile.TraceWriter(Path(path)) as w:
            for _ in range(records):
                w.add(EVENTS)
                w.flush()
    except PyksmError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    sys.exit(0)


def test_a_full_disk_keeps_whole_records_and_says_so(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "t.trace"
    limit = tracefile.HEADER.size + 7 * tracefile.RECORD.size + 13  # mid-record
    child = multiprocessing.get_context("fork").Process(
        target=_fill_under_a_size_limit, args=(str(path), limit, 10)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 2
    # 5 records fit whole, the next flush of 5 was cut back: no torn record.
    assert tracefile.inspect(path).records == 5
    assert list(tracefile.read_trace(path)) == EVENTS


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    real_write = os.write

    def dribble(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data[:7]))

    path = tmp_path / "t.trace"
    monkeypatch.setattr(os, "write", dribble)
    with tracefile.TraceWriter(path) as w:
        w.add(EVENTS)
    monkeypatch.undo()
    assert list(tracefile.read_trace(path)) == EVENTS

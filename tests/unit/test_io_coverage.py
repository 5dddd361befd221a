"""Guest I/O modes x probe layers without QEMU or bcc: the cells, coverage
from a constructed trace, the results' JSON and table, and measure() driving
fake guests (a shell script speaking the agent's protocol) and a fake
recording collector, leaving nothing behind."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from pyksm.collect import tracefile
from pyksm.collect.stats import CollectStats
from pyksm.errors import PyksmError
from pyksm.events import ReadEvent
from pyksm.experiment import io_coverage as io
from pyksm.lab import guest_image
from tests.unit.test_collect_stats import example as example_stats
from tests.unit.test_runner_results import children, open_fds


def test_cells_name_their_drive_filesystem_and_whether_the_layer_reaches_them() -> None:
    c = io.Cell.parse("io_uring/writeback/vfs")
    assert c == io.Cell("io_uring", "writeback", "vfs") and c.name == "io_uring/writeback/vfs"
    assert c.drive.drive_arg(Path("/d")).endswith("aio=io_uring,cache=writeback,readonly=on")
    assert c.fs == "ramfs" and io.Cell("native", "none", "syscalls").fs == "tmpfs"
    reach = {c.name: c.expected_to_reach for c in io.DEFAULT_CELLS}
    assert reach == {
        "threads/writeback/syscalls": True,
        "native/none/syscalls": True,
        "io_uring/writeback/vfs": True,
        "io_uring/writeback/syscalls": False,
    }
    # io_uring's O_DIRECT reads pass no probed function
    assert not io.Cell("io_uring", "none", "vfs").expected_to_reach
    assert io.parse_cells("") == list(io.DEFAULT_CELLS)
    assert io.parse_cells(" threads/none/vfs ,") == [io.Cell("threads", "none", "vfs")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("threads/writeback", "AIO/CACHE/LAYER"),
        ("threads/writeback/kprobe", "layer 'kprobe'"),
        ("native/writeback/syscalls", "aio=native needs cache=none"),
        ("posix/none/vfs", "aio='posix'"),
        ("threads/none/vfs,threads/none/vfs", "each cell once"),
    ],
)
def test_bad_cells_are_refused(text: str, match: str) -> None:
    with pytest.raises(PyksmError, match=match):
        io.parse_cells(text)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "901"])
def test_a_tar_timeout_out_of_range_is_one_line_and_exit_1(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--guest-image", str(tmp_path / "g.json"), "--out", str(tmp_path / "o.json")]
    argv += ["--workdir", str(tmp_path / "w"), "--tar-timeout", value]
    assert io.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tar-timeout must be in (0, 900] s" in err
    assert not (tmp_path / "w").exists()


def ev(ts: int, tgid: int, start: int, length: int, probe: int = 4) -> ReadEvent:
    return ReadEvent(ts_ns=ts, tgid=tgid, probe=probe, start=start, length=length)


def test_window_reads_count_the_pid_in_the_window_and_clip_to_guest_ram(
    tmp_path: Path,
) -> None:
    ram = [(0x10000, 0x20000), (0x40000, 0x50000)]
    events = [
        ev(100, 7, 0x10000, 0x1000),  # before the window
        ev(200, 7, 0x10000, 0x2000),  # inside RAM
        ev(250, 8, 0x10000, 0x2000),  # another process
        ev(300, 7, 0x1F000, 0x2000, probe=10),  # half inside
        ev(350, 7, 0x30000, 0x1000, probe=6),  # outside RAM (a bounce buffer)
        ev(400, 7, 0x40000, 0x1000),  # the window's last ns
        ev(401, 7, 0x40000, 0x1000),  # after
    ]
    trace = tmp_path / "t.trace"
    with tracefile.TraceWriter(trace) as w:
        w.add(events)
    r = io.window_reads(tracefile.read_trace(trace), 7, ram, 200, 400)
    assert r.traced_bytes == 0x2000 + 0x2000 + 0x1000 + 0x1000
    assert r.inside_ram_bytes == 0x2000 + 0x1000 + 0x1000
    assert r.events_by_probe == {"preadv": 2, "filemap_read": 1, "io_submit": 1}
    assert io.coverage(r.inside_ram_bytes, 0x4000) == 1.0
    assert io.coverage(0x1000, 0) == 0.0  # nothing read: no coverage, no ZeroDivisionError


def _result(cell: io.Cell, **kw: object) -> io.CellResult:
    r = io.CellResult(cell.aio, cell.cache, cell.layer, cell.expected_to_reach, cell.fs)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_results_round_trip_through_json_and_make_a_table(tmp_path: Path) -> None:
    a, b, c = io.DEFAULT_CELLS[0], io.DEFAULT_CELLS[3], io.DEFAULT_CELLS[1]
    cells = [
        _result(a, layer_attached="syscalls", guest_read_bytes=24 << 20, traced_bytes=24 << 20,
                inside_ram_bytes=24 << 20, coverage=1.0, events_by_probe={"preadv": 300},
                files=900, tar_status=0, boot_seconds=80.2, tar_seconds=40.5, wall_seconds=500,
                collector_bpf={"emitted": 300, "ringbuf_full": 2, "iov_cut": 0}),
        _result(b, layer_attached="syscalls", guest_read_bytes=24 << 20, coverage=0.0,
                files=900, tar_status=0, boot_seconds=81.0, tar_seconds=41.0, wall_seconds=500),
        _result(c, error="guest native/none/syscalls: QEMU guest exited", wall_seconds=500),
    ]  # fmt: skip
    run = io.Run(cells, 500.0, 128, {"size_mib": 32}, "6.12.117-pyksm", "QEMU emulator 7.2")
    path = tmp_path / "r.json"
    run.save(path)
    assert io.Run.load(path) == run
    assert [r.reaches for r in cells] == [True, False, False]
    lines = io.format_table(cells)
    assert lines[0].split() == ["aio", "cache", "layer", "read", "MiB", "traced", "in", "RAM",
                                "coverage", "reach"]  # fmt: skip
    assert lines[1].split()[:8] == ["threads", "writeback", "syscalls", "(syscalls)", "24.0",
                                    "24.0", "24.0", "1.000"]  # fmt: skip
    assert lines[1].split()[-1] == "yes" and lines[2].split()[-1] == "no"
    assert lines[3].split()[-1] == "ERROR"
    assert any("QEMU guest exited" in ln for ln in lines)
    assert any("preadv 300" in ln and "boot 80 s" in ln for ln in lines)
    assert any(ln.endswith("collector lost: ringbuf_full 2") for ln in lines)
    # a cell that did not do what its layer should is marked
    odd = _result(b, coverage=0.99, guest_read_bytes=1)
    assert io.format_table([odd])[1].endswith("yes (unexpected)")
    path.write_text("{}")
    with pytest.raises(PyksmError, match="not an io-coverage result"):
        io.Run.load(path)


def test_at_once_reports_errors_and_releases_what_finishes_late() -> None:
    released: list[str] = []
    gate = threading.Event()

    def late() -> str:
        gate.wait(5)
        return "late"

    def fails() -> str:
        raise PyksmError("no boot")

    with contextlib.ExitStack() as stack:
        at = io._AtOnce(stack)
        ok = at.start("ok", lambda: "ok", released.append)
        bad = at.start("bad", fails, released.append)
        slow = at.start("slow", late, released.append)
        assert at.wait(ok, 5) == "ok"
        with pytest.raises(PyksmError, match="bad: no boot"):
            at.wait(bad, 5)
        with pytest.raises(PyksmError, match=r"slow: not ready within 0\.01 s"):
            at.wait(slow, 0.01)
    assert released == ["ok"]  # released when the stack unwound
    gate.set()
    assert slow.thread is not None
    slow.thread.join(5)
    assert released == ["ok", "late"]  # finished after: released by its own thread


# The agent's protocol; every line it handles goes to $PIDS (its pid and the
# command) so the fake collector can stamp events for it. aio=native: QEMU fails;
# $TARMODE makes the tar outlive its timeout.
FAKE_QEMU = r"""#!/bin/sh
case "$*" in *aio=native*) echo "qemu: aio=native unsupported here"; exit 1 ;; esac
echo "$$ boot" >> "$PIDS"
echo "@pyksm READY agent=1 uptime_ms=900 disk=ro kernel=6.12.117-pyksm-guest"
while read -r cmd arg; do
  case "$cmd" in
  drop) echo "@pyksm DONE cmd=drop status=0 elapsed_ms=1 read_bytes=0 files=0" ;;
  tar) echo "$$ tar" >> "$PIDS"; sleep 0.3
       case "${TARMODE:-}" in  # slow: reports, then outlives the timeout; silent: only the latter
       slow) echo "@pyksm PROGRESS cmd=tar elapsed_ms=300 read_bytes=8192"; sleep 5 ;;
       silent) sleep 5 ;;
       esac
       echo "@pyksm DONE cmd=tar status=0 elapsed_ms=300 read_bytes=12288 files=3" ;;
  off) echo "@pyksm BYE"; exit 0 ;;
  *) echo "@pyksm ERROR cmd=$cmd unknown command" ;;
  esac
done
"""


class FakeRecorder:
    """One 12 KiB preadv per line of $PIDS: a tar's stamped as it appears (the
    agent sleeps before DONE), a boot's at time 0 (before any window)."""

    def __init__(self, layer: str, trace: Path, pids: Path) -> None:
        self.layer, self.trace, self.pids = layer, trace, pids
        self.events: list[ReadEvent] = []
        self.done = threading.Event()
        self.killed = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        seen = 0
        while not self.done.wait(0.01):
            lines = self.pids.read_text().splitlines() if self.pids.exists() else []
            for ln in lines[seen:]:
                pid, what = ln.split()
                ts = time.monotonic_ns() if what == "tar" else 0
                self.events.append(ev(ts, int(pid), 0x1000, 12288))
            seen = len(lines)

    def stop(self, timeout: float = 60.0) -> CollectStats:
        self.done.set()
        self.thread.join()
        with tracefile.TraceWriter(self.trace) as w:
            w.add(self.events)
        s = example_stats()
        s.layer = "vfs-fentry" if self.layer == "vfs" else self.layer
        return s

    def kill(self) -> None:
        self.killed = True
        self.done.set()
        self.thread.join()


@pytest.fixture
def fake_guest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, guest_image.GuestImage]:
    """A fake QEMU (FAKE_QEMU, writing its pids to $PIDS) and a guest image of 3 files."""
    qemu = tmp_path / "qemu"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    monkeypatch.setenv("PIDS", str(tmp_path / "pids"))
    disk = tmp_path / "disk.ext4"
    disk.write_bytes(b"\0" * 4096)
    image = guest_image.GuestImage(
        tmp_path / "bzImage", tmp_path / "initrd",
        guest_image.DiskImage(disk, "k", 16, "test", ["."], 3, 12288),
    )  # fmt: skip
    return str(qemu), image


def test_measure_runs_every_cell_and_leaves_nothing_behind(
    tmp_path: Path, fake_guest: tuple[str, guest_image.GuestImage]
) -> None:
    qemu, image = fake_guest
    recorders: list[FakeRecorder] = []
    mounted: list[str] = []

    def collector(layer: str, trace: Path, log: Path) -> FakeRecorder:
        recorders.append(FakeRecorder(layer, trace, tmp_path / "pids"))
        return recorders[-1]

    def place(stack: contextlib.ExitStack, src: Path, mountpoint: Path, fs: str) -> Path:
        mounted.append(fs)
        stack.callback(mounted.remove, fs)
        return src

    cells = [io.DEFAULT_CELLS[0], io.DEFAULT_CELLS[1], io.DEFAULT_CELLS[2]]
    before, fds = children(), open_fds()
    out = io.measure(image, cells, tmp_path / "work", qemu=qemu, boot_timeout=10,
                     tar_timeout=10, collector=collector, place=place, say=lambda s: None)  # fmt: skip
    assert mounted == []  # both filesystems were unmounted
    assert children() == before
    assert open_fds() == fds
    assert sorted(r.layer for r in recorders) == ["syscalls", "vfs"]
    threads, native, uring = out
    for r in (threads, uring):
        assert r.error is None, r.error
        assert r.guest_read_bytes == 12288 and r.files == 3 and r.tar_status == 0
        # the boot's event is outside the tar's window; the tar's is counted
        assert r.traced_bytes == 12288 and r.events_by_probe == {"preadv": 1}
        assert r.inside_ram_bytes == 0 and r.coverage == 0.0  # a shell has no guest RAM
        assert r.boot_seconds is not None and r.tar_seconds is not None
        assert r.wall_seconds > 0
    assert threads.layer_attached == "syscalls" and uring.layer_attached == "vfs-fentry"
    assert threads.collector_bpf == example_stats().bpf
    assert uring.disk_fs == "ramfs" and native.disk_fs == "tmpfs"
    assert native.error is not None and "guest native/none/syscalls" in native.error
    assert "aio=native unsupported" in native.error
    assert native.traced_bytes == 0 and native.coverage == 0.0


def test_a_collector_that_does_not_start_fails_its_layers_cells_only(
    tmp_path: Path, fake_guest: tuple[str, guest_image.GuestImage]
) -> None:
    qemu, image = fake_guest

    def collector(layer: str, trace: Path, log: Path) -> FakeRecorder:
        if layer == "vfs":
            raise PyksmError("the collector exited at start (exit 1): no BTF")
        return FakeRecorder(layer, trace, tmp_path / "pids")

    before = children()
    out = io.measure(image, [io.DEFAULT_CELLS[0], io.DEFAULT_CELLS[2]], tmp_path / "w",
                     qemu=qemu, boot_timeout=10, tar_timeout=10, collector=collector,
                     place=lambda stack, src, mp, fs: src, say=lambda s: None)  # fmt: skip
    assert children() == before
    assert out[0].error is None and out[0].traced_bytes == 12288
    assert out[1].error is not None and "no BTF" in out[1].error
    assert out[1].boot_seconds is not None and out[1].tar_seconds is None  # booted, not run


@pytest.mark.parametrize("mode", ["slow", "silent"])
def test_a_tar_past_its_timeout_is_measured_to_its_last_progress_or_fails(
    mode: str,
    tmp_path: Path,
    fake_guest: tuple[str, guest_image.GuestImage],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    qemu, image = fake_guest
    monkeypatch.setenv("TARMODE", mode)
    before = children()
    (r,) = io.measure(image, [io.DEFAULT_CELLS[0]], tmp_path / "w", qemu=qemu, boot_timeout=10,
                      tar_timeout=1.5, place=lambda stack, src, mp, fs: src, say=lambda s: None,
                      collector=lambda layer, trace, log: FakeRecorder(layer, trace,
                                                                       tmp_path / "pids"))  # fmt: skip
    assert children() == before
    if mode == "silent":  # nothing to measure: an error, as before
        assert r.error is not None and "no DONE within 1.5 s" in r.error
        assert r.cut_short is None and r.traced_bytes == 0
        return
    assert r.error is None
    assert r.cut_short is not None and "no DONE within 1.5 s" in r.cut_short
    assert r.tar_status is None and r.guest_read_bytes == 8192  # the PROGRESS's count
    assert r.traced_bytes == 12288  # the tar's event, inside the window up to the PROGRESS
    assert r.tar_seconds is not None and r.tar_seconds < 1.5
    lines = io.format_table([r])
    assert "PARTIAL" in lines[1]
    assert any("PARTIAL, coverage of the 0.0 MiB read" in ln for ln in lines)
    assert io.CellResult.from_dict(json.loads(json.dumps(asdict(r)))) == r

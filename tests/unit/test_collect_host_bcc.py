"""Record mode with the real bcc on the machine's own kernel (syscall tracepoints).

Needs root, Debian's bcc and syscall tracepoints; skipped otherwise. Takes
~10 s (bcc compiles the program). The collector is stopped with SIGINT, so
this also checks that an interrupted recording is complete and readable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyksm.collect import tracefile
from pyksm.collect.process import CollectorProcess
from pyksm.deadline import wait_for
from pyksm.events import PROBE_NAMES
from pyksm.probes import features

REPO = Path(__file__).resolve().parents[2]
READER = REPO / "tests" / "vm" / "guest" / "read_into_mergeable.py"


@pytest.fixture
def bcc() -> None:
    """Skip unless this machine can run the collector: root, bcc, syscall tracepoints."""
    reason = _bcc_usable()
    if reason:
        pytest.skip(reason)


def _bcc_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc not importable"
    if "pread64" not in features.probe().syscalls:
        return "no syscall tracepoints"
    return None


@pytest.mark.host_bcc
@pytest.mark.usefixtures("bcc")
def test_record_mode_traces_exact_ranges_and_survives_sigint(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(16 * 4096))
    trace = tmp_path / "r.trace"
    ready = tmp_path / "ready"
    out = tmp_path / "expected.json"
    reader = subprocess.Popen(
        [
            sys.executable,
            str(READER),
            str(data),
            str(out),
            "--wait-for",
            str(ready),
            "--linger",
            "1",
        ]
    )
    try:
        # The one helper that starts a collector: it returns once the probes are attached.
        with CollectorProcess(
            ["-p", str(reader.pid), "--record", str(trace)], tmp_path / "collect.log"
        ) as collector:
            ready.touch()
            assert reader.wait(timeout=120) == 0
            time.sleep(0.3)
            stats = collector.stop()  # SIGINT
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert stats.interrupted is True
    expected = json.loads(out.read_text())
    seen = [
        (PROBE_NAMES[e.probe], e.start, e.length)
        for e in tracefile.read_trace(trace)
        if e.tgid == expected["pid"]
    ]
    # Python's os.preadv uses preadv2 when available; both are the preadv family.
    seen = [("preadv" if p == "preadv2" else p, s, n) for p, s, n in seen]
    want = [tuple(x) for x in expected["expected"]]
    assert sorted(seen) == sorted(want)
    assert stats.outside_bytes == 0  # all inside the MADV_MERGEABLE region
    assert stats.bpf["ringbuf_full"] == 0


@pytest.mark.host_bcc
@pytest.mark.usefixtures("bcc")
def test_kill_9_of_the_collector_leaves_a_readable_trace(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(64 * 4096))
    loop = (
        "import mmap, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
        "mv = memoryview(m)\n"
        "while True:\n"
        "    for p in range(64):\n"
        "        os.preadv(fd, [mv[p * 4096 : (p + 1) * 4096]], p * 4096)\n"
        "    time.sleep(0.001)\n"
    )
    target = subprocess.Popen([sys.executable, "-c", loop, str(data)])
    trace = tmp_path / "k.trace"
    try:
        with CollectorProcess(
            ["-p", str(target.pid), "--record", str(trace)], tmp_path / "collect.log", stats=False
        ) as collector:
            wait_for(lambda: trace.stat().st_size >= 24 + 32 * 1000, 60, "1000 records", poll=0.05)
            collector.proc.kill()  # SIGKILL: no flush, no cleanup
            collector.proc.wait()
    finally:
        target.kill()
        target.wait()
    records = list(tracefile.read_trace(trace))
    assert len(records) >= 1000
    assert {r.tgid for r in records} == {target.pid}


def _reading_target(data: Path) -> subprocess.Popen[bytes]:
    loop = (
        "import os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
        "while True:\n"
        "    for p in range(64):\n"
        "        os.pread(fd, 4096, p * 4096)\n"
        "    time.sleep(0.001)\n"
    )
    data.write_bytes(os.urandom(64 * 4096))
    return subprocess.Popen([sys.executable, "-c", loop, str(data)])


@pytest.mark.host_bcc
@pytest.mark.usefixtures("bcc")
def test_json_with_an_interval_is_json_lines(tmp_path: Path) -> None:
    target = _reading_target(tmp_path / "data.bin")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pyksm", "collect", "-p", str(target.pid),
             "--record", str(tmp_path / "t.trace"), "-d", "2", "--json", "0.5"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        target.kill()
        target.wait()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) >= 3
    docs = [json.loads(line) for line in lines]  # every line is one whole object
    assert all("events" in d for d in docs)


def _limit_file_size() -> None:
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Records are written 2048 at a time: room for two writes and part of a third.
    limit = tracefile.HEADER.size + 5000 * tracefile.RECORD.size + 7
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.host_bcc
@pytest.mark.usefixtures("bcc")
def test_a_full_disk_during_record_keeps_whole_records_and_is_one_line(tmp_path: Path) -> None:
    target = _reading_target(tmp_path / "data.bin")
    trace = tmp_path / "t.trace"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pyksm", "collect", "-p", str(target.pid),
             "--record", str(trace), "-d", "60"],
            capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size,
        )  # fmt: skip
    finally:
        target.kill()
        target.wait()
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "whole record" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    info = tracefile.inspect(trace)  # raises on a torn record
    assert 0 < info.records <= 5000
    assert trace.stat().st_mode & 0o777 == 0o600


@pytest.mark.host_bcc
@pytest.mark.usefixtures("bcc")
def test_collector_process_is_ready_then_returns_its_statistics(tmp_path: Path) -> None:
    target = _reading_target(tmp_path / "data.bin")
    try:
        with CollectorProcess(
            ["-p", str(target.pid), "--record", str(tmp_path / "t.trace")], tmp_path / "log"
        ) as col:
            time.sleep(0.5)
            stats = col.stop()
    finally:
        target.kill()
        target.wait()
    assert stats.targets_seen == [target.pid] and stats.interrupted is True
    assert stats.events > 0 and stats.records_written == stats.events


@pytest.mark.host_bcc
@pytest.mark.usefixtures("bcc")
def test_qmp_prints_the_qemu_pid_and_ram_it_found(fake_qemu: Path, tmp_path: Path) -> None:
    # The fake QEMU is this test process: SO_PEERCRED names it, its RAM is 512 MiB.
    proc = subprocess.run(
        [sys.executable, "-m", "pyksm", "collect", "--qmp", str(fake_qemu),
         "--record", str(tmp_path / "t.trace"), "-d", "0.5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"QEMU pid {os.getpid()}, RAM 512 MiB" in proc.stderr

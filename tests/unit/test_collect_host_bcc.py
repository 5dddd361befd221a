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
from pyksm.events import PROBE_NAMES
from pyksm.probes import features

REPO = Path(__file__).resolve().parents[2]
READER = REPO / "tests" / "vm" / "guest" / "read_into_mergeable.py"


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
def test_record_mode_traces_exact_ranges_and_survives_sigint(tmp_path: Path) -> None:
    reason = _bcc_usable()
    if reason:
        pytest.skip(reason)
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
    collector = subprocess.Popen(
        [sys.executable, "-m", "pyksm.cli", "collect", "-p", str(reader.pid),
         "--record", str(trace), "--ready-file", str(ready), "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert reader.wait(timeout=120) == 0
        time.sleep(0.3)
        collector.send_signal(signal.SIGINT)
        stdout, _ = collector.communicate(timeout=60)
    finally:
        for p in (reader, collector):
            if p.poll() is None:
                p.kill()
    assert collector.returncode == 0
    stats = json.loads(stdout)
    assert stats["interrupted"] is True
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
    assert stats["outside_bytes"] == 0  # all inside the MADV_MERGEABLE region
    assert stats["bpf"]["ringbuf_full"] == 0


@pytest.mark.host_bcc
def test_kill_9_of_the_collector_leaves_a_readable_trace(tmp_path: Path) -> None:
    reason = _bcc_usable()
    if reason:
        pytest.skip(reason)
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
    collector = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyksm.cli",
            "collect",
            "-p",
            str(target.pid),
            "--record",
            str(trace),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (not trace.exists() or trace.stat().st_size < 24 + 32 * 1000) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        collector.kill()
        collector.wait()
    finally:
        target.kill()
        target.wait()
        if collector.poll() is None:
            collector.kill()
    records = list(tracefile.read_trace(trace))
    assert len(records) >= 1000
    assert {r.tgid for r in records} == {target.pid}

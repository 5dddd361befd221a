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
from pyksm.probes import features
from pyksm.probes.loader import PROBE_NAMES

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
    out = tmp_path / "expected.json"
    reader = subprocess.Popen(
        [
            sys.executable,
            str(READER),
            str(data),
            str(out),
            "--wait-for",
            str(trace),
            "--linger",
            "1",
        ]
    )
    collector = subprocess.Popen(
        [sys.executable, "-m", "pyksm.cli", "collect", "-p", str(reader.pid),
         "--record", str(trace), "--json"],
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

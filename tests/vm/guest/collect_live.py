"""Guest side of test_collect.py: the live hint pipeline on the KSM++ kernel.

A reader (read_into_mergeable.py) fills MADV_MERGEABLE memory twice with
the same file data through preadv, readv, pread64, read and io_submit while
`pyksm collect -p PID` runs live. Then: the reader is killed with -9 while
the collector keeps running, and the collector is stopped with SIGINT.
Finally the recorded variant: `collect --record` of a second reader, and
`pyksm hint --replay` of that trace while the reader is still alive.

--layer vfs (or vfs-fentry, vfs-kprobe): the collectors use the vfs layer
(bpf/vfs_read_trace.c; `vfs` is BPF trampolines where they work, else
kprobes), the reader also reads with io_uring (READ, READV: no read syscall),
and the file lives on a ramfs (page cache: io_uring reads it inline,
filemap_read runs). The record phase then runs three more recorders on the
same reader for comparison: the syscalls layer, the same vfs layer without
aio_read (so AIO reads reach it through filemap_read, like io_uring's always
do), and the vfs layer through the other mechanism (kprobes when the main
one is trampolines, and the other way round).

usage: collect_live.py OUT.json WORKDIR [--layer syscalls|vfs|vfs-fentry|vfs-kprobe]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pyksm import deadline
from pyksm.collect import tracefile
from pyksm.errors import PyksmError
from pyksm.kernel import hints, ksm
from pyksm.probes import loader

HERE = Path(__file__).parent
READER = HERE / "read_into_mergeable.py"
# How long a collector may take to attach (its bcc compile); the readers wait longer.
ATTACH_S = 900 * float(os.environ.get("PYKSM_TEST_SLOW", "1"))
PY = sys.executable
ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("work")
ap.add_argument(
    "--layer", choices=("syscalls", "vfs", "vfs-fentry", "vfs-kprobe"), default="syscalls"
)
cli = ap.parse_args()
out_path, work = Path(cli.out), Path(cli.work)
work.mkdir(parents=True, exist_ok=True)
VFS = cli.layer.startswith("vfs")
LAYER_ARGS = ["--layer", cli.layer]
READER_ARGS = ["--io-uring"] if VFS else []
# What each probe of each layer reports a reader's call as (tracefile.probe_name).
AS_PROBE = {
    "syscalls": {"preadv2": "preadv"},  # Python's os.preadv may use preadv2
    "vfs": loader.VFS_PROBE_FOR,
}
FALLBACK = ("vfs_read", "vfs_readv", "filemap_read")
AS_PROBE["vfs-fallback"] = {**AS_PROBE["vfs"], "io_submit": "filemap_read"}
res: dict[str, object] = {"layer": cli.layer}
k = ksm.Ksm()
res["hints_supported"] = k.hints_supported
if not k.hints_supported:  # the kernel was built without the KSM++ series
    out_path.write_text(json.dumps(res))
    sys.exit(0)
hints.ensure_debugfs()
k.write("run", 1)
res["knobs"] = {
    n: k.read(n) for n in ("hint_capacity", "hint_interleave", "pages_to_scan", "sleep_millisecs")
}
data_dir = work
if VFS:
    data_dir = work / "ram"
    data_dir.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(data_dir)], check=True)
data = data_dir / "data.bin"
data.write_bytes(os.urandom(16 * 4096))


def ready_file(log: Path) -> Path:
    return log.with_suffix(".ready")


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    """pyksm.deadline.wait_for, as a result to record instead of an exception."""
    try:
        deadline.wait_for(pred, timeout, "collect_live")
    except PyksmError:
        return False
    return True


def start_collector(args: list[str], tag: str) -> tuple[subprocess.Popen[str], Path]:
    """The collector writes ``ready_file(log)`` once attached (--ready-file)."""
    log = work / f"{tag}.stderr"
    proc = subprocess.Popen(
        [PY, "-m", "pyksm.cli", "collect", *args, "--ready-file", str(ready_file(log)), "--json"],
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115
        text=True,
    )
    return proc, log


def start_reader(expected: Path, ready: Path, *extra: str) -> subprocess.Popen[bytes]:
    """The reader; it starts reading once ``ready`` exists and then lingers."""
    argv = [str(READER), str(data), str(expected), "--wait-for", str(ready), "--linger", "300"]
    argv += extra
    argv += ["--wait-timeout", str(ATTACH_S + 120)]
    return subprocess.Popen([PY, *argv, *READER_ARGS])


def seen_in(trace: Path, tgid: int) -> list[tuple[str, int, int]]:
    return sorted(
        (tracefile.probe_name(e.probe), e.start, e.length)
        for e in tracefile.read_trace(trace)
        if e.tgid == tgid
    )


def compare(
    seen: list[tuple[str, int, int]], want: list[list[Any]], as_probe: dict[str, str]
) -> dict[str, Any]:
    """What a recorder saw against what the reader did."""
    exp = sorted((as_probe.get(n, n), a, b) for n, a, b in want)
    got = sorted((as_probe.get(n, n), a, b) for n, a, b in seen)
    ranges_want = {(a, b) for _, a, b in exp}
    ranges_got = {(a, b) for _, a, b in got}
    by_probe: dict[str, int] = {}
    for n, _, _ in got:
        by_probe[n] = by_probe.get(n, 0) + 1
    return {
        "exact": got == exp,  # every (probe, address, length) and nothing else
        "ranges_exact": ranges_got == ranges_want and len(got) == len(exp),
        "ranges_expected": len(exp),
        "ranges_seen": len(ranges_got & ranges_want),
        "ranges_extra": len(ranges_got - ranges_want),
        "bytes_expected": sum(b for _, b in ranges_want),
        "bytes_seen": sum(b for _, b in ranges_got & ranges_want),
        "by_probe": by_probe,
        "missed_calls": sorted({str(n) for n, a, b in want if (a, b) not in ranges_got}),
    }


# --- live ---------------------------------------------------------------
ready = work / "ready-live"
expected = work / "expected-live.json"
# 32 MiB of unique mergeable pages beside the 160 read pages, and no smart
# scan (it would skip the unique pages after a few rounds): ksmd's linear
# scan needs seconds to visit the read pages twice (it merges on the second
# visit), so a merge within that time came through the hints. Without the
# ballast a full scan took ~50 ms and raced the hints.
smart0 = k.read_int("smart_scan") if k.has("smart_scan") else None
if smart0 is not None:
    k.write("smart_scan", 0)
reader = start_reader(expected, ready, "--ballast-mib", "32")
counters0 = {n: k.read_int(n) for n in sorted(ksm.MONOTONIC) if k.has(n)}
rec0, merged0 = counters0["hints_received"], counters0["hint_pages_merged"]
collector, log = start_collector(["-p", str(reader.pid), *LAYER_ARGS], "live")
# Compiling the probes (kheaders, clang) took more than 300 s under TCG with
# another VM on the 2 CPUs, more than 600 s on the debug kernel.
res["attached"] = wait_for(ready_file(log).exists, ATTACH_S)
t_attach = time.monotonic()
ready.touch()
wait_for(expected.exists, 60)
exp = json.loads(expected.read_text())
res["expected"] = exp["expected"]
n_expected = len(exp["expected"])
wait_for(lambda: k.read_int("hints_received") - rec0 >= n_expected, 30)
res["hints_received_delta"] = k.read_int("hints_received") - rec0
res["merged_through_hints"] = wait_for(lambda: k.read_int("hint_pages_merged") > merged0, 120)
res["hint_pages_merged_delta"] = k.read_int("hint_pages_merged") - merged0
res["seconds_to_merge"] = round(time.monotonic() - t_attach, 1)
# Every KSM counter that moved, so a failure says where the hinted visits went.
res["counter_deltas"] = {n: d for n, v in counters0.items() if (d := k.read_int(n) - v)}
res["process_ksm"] = ksm.process_stat(reader.pid)
if smart0 is not None:
    k.write("smart_scan", smart0)
# Robustness: the target dies under the collector.
reader.kill()
reader.wait()
time.sleep(2.5)  # two target refreshes
res["collector_alive_after_target_kill"] = collector.poll() is None
collector.send_signal(signal.SIGINT)
stdout, _ = collector.communicate(timeout=60)
res["collector_exit"] = collector.returncode
res["live_stats"] = json.loads(stdout) if stdout.strip() else None
res["live_stderr"] = log.read_text()[-2000:]

# --- record, then replay --------------------------------------------------
# name -> (collect arguments, how its probes name the reader's calls)
recorders: dict[str, tuple[list[str], dict[str, str]]] = {
    "record": (LAYER_ARGS, AS_PROBE["vfs" if VFS else "syscalls"]),
}
if VFS:
    recorders["syscalls"] = (["--layer", "syscalls"], AS_PROBE["syscalls"])
    recorders["vfs-fallback"] = (
        [*LAYER_ARGS, "--functions", ",".join(FALLBACK)],
        AS_PROBE["vfs-fallback"],
    )
    # the same layer through the other mechanism than the live collector's
    live_stats = res["live_stats"]
    main = live_stats.get("layer") if isinstance(live_stats, dict) else None
    other = "vfs-kprobe" if main == "vfs-fentry" else "vfs-fentry"
    res["other_mechanism"] = other
    recorders[other] = (["--layer", other], AS_PROBE["vfs"])
ready2 = work / "ready-record"
expected2 = work / "expected-record.json"
reader2 = start_reader(expected2, ready2)
running: dict[str, tuple[subprocess.Popen[str], Path, Path]] = {}
for name, (args, _names) in recorders.items():
    trace = work / f"{name}.trace"
    proc, log = start_collector(["-p", str(reader2.pid), *args, "--record", str(trace)], name)
    running[name] = (proc, log, trace)
res["record_attached"] = wait_for(
    lambda: all(
        ready_file(log).exists() or proc.poll() is not None for proc, log, _ in running.values()
    ),
    ATTACH_S,
)
res["record_started"] = {name: ready_file(log).exists() for name, (_, log, _) in running.items()}
ready2.touch()
wait_for(expected2.exists, 120)
time.sleep(0.5)
record_expected = json.loads(expected2.read_text())["expected"]
res["record_expected"] = record_expected
comparison: dict[str, dict[str, Any]] = {}
for name, (proc, log, trace) in running.items():
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    stats = json.loads(text) if text.strip() else None
    seen = seen_in(trace, reader2.pid) if trace.exists() else []
    cmp = compare(seen, record_expected, recorders[name][1])
    cmp["exit"] = proc.returncode
    cmp["bpf"] = stats["bpf"] if stats else log.read_text()[-2000:]
    cmp["layer"] = stats["layer"] if stats else None
    comparison[name] = cmp
    if name == "record":
        res["record_exit"] = proc.returncode
        res["record_stats"] = stats
        res["record_exact"] = cmp["exact"]  # every (call, address, length) as the reader made it
res["comparison"] = comparison
rec1 = k.read_int("hints_received")
rp = subprocess.run(
    [PY, "-m", "pyksm.cli", "hint", "--replay", str(running["record"][2]), "--speed", "0"],
    capture_output=True,
    text=True,
)
res["replay_exit"] = rp.returncode
res["replay_stats"] = json.loads(rp.stdout) if rp.returncode == 0 else rp.stderr
res["replay_received_delta"] = k.read_int("hints_received") - rec1
reader2.kill()
out_path.write_text(json.dumps(res, indent=1))

"""Every input gets an answer: bad input to any subcommand is one line and exit 2.

Each case runs the real command line (``pyksm.cli.main``) in a forked child
with its own stdout/stderr files and a timeout, on this host's kernel (stock:
no KSM++ knobs, maybe no kprobes), and asserts a non-zero exit (2: bad
input), exactly one line on stderr and no traceback anywhere.

Placeholders in an argv are made per test under ``tmp_path``:
``{tmp}`` the directory, ``{file}`` a regular file, ``{junk}`` a file of
garbage, ``{empty}`` an empty file, ``{json}`` broken JSON, ``{results}`` a
results directory with broken samples, ``{red}`` a missing path with
``[red]`` in it (rich markup must print as is), ``{pid}`` a process that
exited, ``{fifo}`` a named pipe (opening it would wait for the other end),
``{npz}`` a small valid snapshot file. ``{tmp}`` also holds broken hint
traces and snapshots (``*.txt``, ``*.jsonl``, ``*.npz``), results
directories broken one way each (``broken/res-*``) and a good one
(``good``) with report directories in the way (``out-*``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

MISSING_PID = "999999999"


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    # Part of the one stderr line (after placeholders are filled in); "" for any.
    says: str = ""
    # Exit code wanted; 2 for bad input.
    code: int = 2
    # A case that, if the parser let it through, would build a kernel or boot a VM.
    heavy: bool = False


def c(line: str, says: str = "", code: int = 2, heavy: bool = False) -> Case:
    return Case(tuple(line.split()), says, code, heavy)


CASES: list[Case] = [
    # kernel / vm
    c("kernel build -j -1", "-j", heavy=True),
    c("kernel build -j 0", "-j", heavy=True),
    c("kernel build -j x", "-j"),
    c("kernel build --fragment {tmp}/nope.config", "nope.config", heavy=True),
    c("vm run --cpus 0 -- true", "--cpus", heavy=True),
    c("vm run --cpus -2 -- true", "--cpus", heavy=True),
    c("vm run --timeout 0 -- true", "--timeout", heavy=True),
    c("vm run --timeout -1 -- true", "--timeout", heavy=True),
    c("vm run --memory 2X -- true", "--memory", heavy=True),
    c("vm run --memory= -- true", "--memory", heavy=True),
    c("vm run --kernel {tmp}/no-bzImage -- true", "no-bzImage"),
    c("vm run --kernel {file} --outdir /proc/pyksm -- true", "/proc", heavy=True),
    c("vm run --kernel {file} --outdir {file} -- true", "not a directory", heavy=True),
    c("vm run --kernel {file}", "no command"),
    c("vm scan-log {tmp}/missing.log", "missing.log"),
    c("vm scan-log {tmp}", "directory"),
    c("vm scan-log {red}", "[red]"),
    c("vm scan-log {fifo}", "not a regular file"),
    c("vm scan-log /dev/zero", "not a regular file"),
    # ksm
    c("ksm show --pid -1", "--pid"),
    c("ksm show --pid 0", "--pid"),
    c(f"ksm show --pid {MISSING_PID}", MISSING_PID),
    c("ksm show --pid {pid}", "no process"),
    c("ksm set no_such_knob=1", "no_such_knob"),
    c("ksm set [red]=1", "[red]"),
    c("ksm set run=", "empty"),
    c("ksm set pages_to_scan=", "empty"),
    c("ksm set ../ksm/no_such=1", "/"),
    c("ksm set a/b=1", "/"),
    c("ksm set =1", "KNOB=VALUE"),
    c("ksm set run", "KNOB=VALUE"),
    c("ksm set pages_to_scan=-5", "pages_to_scan"),
    # hint
    c("hint -1 0x1000 4096", "pid"),
    c("hint 0 0x1000 4096", "pid"),
    c("hint 1 0x1000 0", "len"),
    c("hint 1 0x1000 -4096", "len"),
    c("hint 1 -0x1000 4096", "-0x1000"),
    c("hint 1 zz 4096", "start"),
    c("hint --replay {tmp}/missing.trace", "missing.trace"),
    c("hint --replay {junk}", "not a pyksm hint trace"),
    c("hint --replay {empty}", "empty.bin"),
    c("hint --replay {trace} --speed -1", "--speed"),
    c("hint --replay {red}", "[red]"),
    # collect
    c("collect", "no targets"),
    c("collect -p -1 --record {tmp}/t", "--pid"),
    c("collect -p 0 --record {tmp}/t", "--pid"),
    c(f"collect -p {MISSING_PID} --record {{tmp}}/t", MISSING_PID),
    c("collect -p {pid} --record {tmp}/t", "no process"),
    c("collect -p 1 -d 0 --record {tmp}/t", "--duration"),
    c("collect -p 1 -d -1 --record {tmp}/t", "--duration"),
    c("collect -p 1 --min-bytes -1 --record {tmp}/t", "--min-bytes"),
    c("collect -p 1 --record {tmp}/t 0 3", "interval"),
    c("collect -p 1 --record {tmp}/t -1", "interval"),
    c("collect -p 1 --record {tmp}/t 1 0", "count"),
    c("collect -p 1 --record {tmp}/t 1 -2", "count"),
    c("collect -p 1 --record {tmp}/no/dir/t", "no/dir"),
    c("collect -p 1 --record {tmp}", "directory"),
    c("collect -p 1 --record /proc/pyksm.trace", "/proc"),
    c("collect -p 1 --record {junk}", "not a pyksm hint trace"),
    c("collect -p 1 --record {red}/t", "[red]"),
    c("collect -p 1 --record {fifo}", "not a regular file"),
    c("collect --qmp {tmp}/missing.qmp --record {tmp}/t", "missing.qmp"),
    c("collect --qmp {file} --record {tmp}/t", "file.txt"),
    c("collect -p 1 --record {tmp}/t --syscalls ,", "--syscalls"),
    c("collect -p 1 --record {tmp}/t --layer vfs --functions ,", "--functions"),
    c("collect -p 1 --record {tmp}/t --layer syscalls --functions vfs_read", "--functions"),
    c("collect -p 1 --record {tmp}/t --ready-fd 999", "--ready-fd"),
    c("collect -p 1 --record {tmp}/t --ready-file /proc/ready", "/proc"),
    c("collect -p 1 --record {tmp}/t --ready-file {tmp}/no/dir/ready", "no/dir"),
    c("collect -p 1 --record {tmp}/t --safe --allow", "--allow"),
    c("collect -p 1 --record {tmp}/t --safe --allow qemu-system-x86_64", "15 characters"),
    c("collect -p 1 --record {tmp}/t --safe --trust-group a=x --allow 1", "NAME=PID"),
    c("collect --cgroup {tmp}/no-such-cgroup --record {tmp}/t", "no cgroup"),
    c("collect --cgroup [red] --record {tmp}/t", "[red]"),
    c("collect -p 1 --record {tmp}/t --adaptive-interleave", "needs live mode"),
    c("collect -p 1 --record {tmp}/t --interleave-ladder 1:1", "only applies with"),
    c("collect -p 1 --adaptive-interleave --interleave-ladder 17:1", "at most 16 x L"),
    c("collect -p 1 --adaptive-interleave --interleave-ladder 1:0", "L must be at least 1"),
    c("collect -p 1 --adaptive-interleave --interleave-ladder 2:1,1:1", "must grow"),
    c("collect -p 1 --adaptive-interleave --interleave-ladder x", "--interleave-ladder"),
    c("collect -p 1 --adaptive-interleave --interleave-ladder ,", "empty"),
    # trace
    c("trace show {tmp}/missing.trace", "missing.trace"),
    c("trace show {tmp}", "directory"),
    c("trace show {junk}", "not a pyksm hint trace"),
    c("trace show {empty}", "empty.bin"),
    c("trace show {red}", "[red]"),
    c("trace show {fifo}", "not a regular file"),
    c("trace show /dev/zero", "not a regular file"),
    c("hint --replay {fifo}", "not a regular file"),
    # snapshot / analyze / simulate
    c(f"snapshot -p {MISSING_PID} -n 1 -o {{tmp}}/s.npz", MISSING_PID),
    c("snapshot -p {pid} -n 1 -o {tmp}/s.npz", "no process"),
    c("snapshot -p -1 -o {tmp}/s.npz", "--pid"),
    c("snapshot -p 1 -i 0 -o {tmp}/s.npz", "--interval"),
    c("snapshot -p 1 -i -1 -o {tmp}/s.npz", "--interval"),
    c("snapshot -p 1 -n 0 -o {tmp}/s.npz", "--count"),
    c("snapshot -p 1 -n -3 -o {tmp}/s.npz", "--count"),
    c("snapshot -p 1 -n 1 -o {tmp}/no/dir/s.npz", "no/dir"),
    c("snapshot -p 1 -n 1 -o {tmp}", "directory"),
    c("snapshot -p 1 -n 1 -o /proc/s.npz", "/proc"),
    c("snapshot -p 1 -n 1 -o {red}/s.npz", "[red]"),
    c("analyze {tmp}/missing.npz", "missing.npz"),
    c("analyze {tmp}", "directory"),
    c("analyze {junk}", "junk.bin"),
    c("analyze {empty}", "empty.bin"),
    c("analyze {json}", "bad.json"),
    c("analyze {red}", "[red]"),
    c("simulate {junk}", "junk.bin"),
    c("simulate {tmp}/missing.npz", "missing.npz"),
    c("simulate {junk} --pages-to-scan 0", "--pages-to-scan"),
    c("simulate {junk} --pages-to-scan -1", "--pages-to-scan"),
    c("simulate {junk} --sleep-ms -1", "--sleep-ms"),
    c("simulate {junk} --hint-capacity -1", "--hint-capacity"),
    c("simulate {junk} --interleave x", "--interleave"),
    c("simulate {junk} --interleave 0:0", "--interleave"),
    c("simulate {junk} --hint-max-age-ms -5", "--hint-max-age-ms"),
    c("simulate {junk} --hint-order lru", "--hint-order"),
    c("simulate {junk} --sweep bogus=1", "--sweep"),
    c("simulate {junk} --sweep pages_to_scan=", "--sweep"),
    c("simulate {junk} --sweep pages_to_scan=-1", "--sweep"),
    c("analyze {fifo}", "not a regular file"),
    c("analyze {npz} -o {fifo}", "not a regular file"),
    c("analyze {npz} --hints /dev/zero", "not a regular file"),
    c("analyze {tmp}/nan-times.npz", "finite"),
    c("analyze {tmp}/snap-2d.npz", "1-D"),
    c("simulate {tmp}/snap-meta.npz", "ksm_start"),
    c("analyze {npz} --hints {tmp}/hints-2d.npz", "1-D"),
    c("analyze {npz} --hints {tmp}/hints-nan.npz", "finite"),
    c("analyze {npz} --hints {tmp}/latin1.txt", "latin1.txt"),
    c("analyze {npz} --hints {tmp}/latin1.jsonl", "latin1.jsonl"),
    c("analyze {npz} --hints {tmp}/negstart.txt", "start -4096"),
    c("analyze {npz} --hints {tmp}/hugelen.txt", "len"),
    c("analyze {npz} --hints {tmp}/bigpid.jsonl", "pid"),
    c("simulate {npz} --hints {tmp}/nantime.txt", "finite"),
    c("simulate {npz} --pages-to-scan 99999999999999999999", "pages_to_scan"),
    c("simulate {npz} --hint-capacity 99999999999999999999", "hint_capacity"),
    c("simulate {npz} --hint-capacity 65537", "at most 65536"),
    c("simulate {npz} --sleep-ms 1e-300", "sleep_ms"),
    c("simulate {npz} --sweep sleep_ms=1e-300", "sleep_ms"),
    c("simulate {npz} --sweep sleep_ms=nan", "sleep_ms"),
    c("simulate {npz} --sweep hint_capacity=99999999999999999999", "hint_capacity"),
    c("simulate {npz} --sweep seed=99999999999999999999", "seed"),
    c("simulate {npz} --sweep max_page_sharing=99999999999999999999", "max_page_sharing"),
    c("simulate {npz} --sweep interleave=1:99999999999999999999", "at most 1000"),
    c("simulate {npz} --sweep start=nan", "start"),
    c("simulate {npz} --sweep adaptive_interleave=1 --sweep adapt_period_ms=1e-3", "adapt_period"),
    # experiment / report / demo
    c("experiment run kernel-build --duration 0", "--duration", heavy=True),
    c("experiment run kernel-build --duration -1", "--duration", heavy=True),
    c("experiment run steady --duration 0", "--duration", heavy=True),
    c("experiment run steady --duration -60", "--duration", heavy=True),
    c("experiment run steady --duration 1e9", "at most 86400 s", heavy=True),
    c("experiment run steady --duration nan", "--duration", heavy=True),
    c("experiment run steady --duration 20min", "not a number", heavy=True),
    c("experiment run kernel-build --scan-rate x", "scan"),
    c("experiment run kernel-build --scan-rate 0:20", "scan", heavy=True),
    c("experiment run kernel-build --scan-rate 100:-1", "scan", heavy=True),
    c("experiment run kernel-build --scan-rate 99999999999999999999:20", "at most", heavy=True),
    c("experiment run kernel-build --modes bogus", "bogus"),
    c("experiment run kernel-build --modes=", "--modes", heavy=True),
    c("experiment run kernel-build --warm-up -1", "--warm-up"),
    c("experiment run kernel-build --clock bogus", "--clock"),
    c("experiment run qemu-apache --clock icount", "--clock icount: not for real-QEMU"),
    c("experiment run qemu-kernel-build --guest-memory 64", "128 to 512 MiB"),
    c("experiment run qemu-kernel-build --guest-memory 0", "--guest-memory"),
    c("experiment run qemu-kernel-build --guest-memory 1e3", "--guest-memory"),
    c("experiment run qemu-apache --ballast-mib 4096", "0 to 2048 MiB"),
    c("experiment run qemu-apache --ballast-mib -1", "--ballast-mib"),
    c("experiment run qemu-mixed --disk-mib 5000", "32 to 1024 MiB"),
    c("experiment run qemu-mixed --disk-mib 8", "32 to 1024 MiB"),
    c("experiment run apache --ballast-mib 5", "--ballast-mib: for real-QEMU scenarios only"),
    c("experiment run steady --guest-memory 256", "for real-QEMU scenarios only"),
    c("experiment run kernel-build --outdir /proc/pyksm", "/proc", heavy=True),
    c("experiment run kernel-build --outdir {file}", "not a directory", heavy=True),
    # the real-QEMU guests: refused before anything is built or booted
    c("kernel build --guest --debug", "--guest", heavy=True),
    c("guest-image build --size-mib 0", "--size-mib", heavy=True),
    c("guest-image build --size-mib 8", "at least 16 MiB", heavy=True),
    c("guest-image build --tree {tmp}/nope", "nope", heavy=True),
    c("guest-image build --tree {file}", "not a directory", heavy=True),
    c("guest-image build --subdirs ../etc", "inside the tree", heavy=True),
    c("guest-image build --subdirs ,", "--subdirs", heavy=True),
    c("experiment qemu-guest --aio posix", "--aio", heavy=True),
    c("experiment qemu-guest --aio native --cache writeback", "needs cache=none", heavy=True),
    c("experiment qemu-guest --workload tar --path ../etc", "disk path", heavy=True),
    c("experiment qemu-guest --workload random --rate -1", "--rate", heavy=True),
    c("experiment qemu-guest --workload random --rate 99999999999999999999", "rate", heavy=True),
    c("experiment qemu-guest --memory 0", "--memory", heavy=True),
    c("experiment qemu-guest --kernel {tmp}/no-bzImage", "no-bzImage", heavy=True),
    c("experiment run no-such-scenario", "no-such-scenario"),
    c("experiment run kernel-build --repeat 0", "--repeat", heavy=True),
    c("experiment run kernel-build --repeat -1", "--repeat", heavy=True),
    c("experiment run kernel-build --repeat x", "--repeat"),
    c("experiment run kernel-build --modes ksm,ksm++,ksm", "ksm is given twice", heavy=True),
    c("experiment run kernel-build --modes ksm=4:1", "only a ksm++ mode", heavy=True),
    c("experiment run kernel-build --modes ksm++=1:0,ksm", "L must be at least 1", heavy=True),
    c("experiment matrix", "--scenarios"),
    c("experiment matrix --scenarios ,", "no scenarios", heavy=True),
    c("experiment matrix --scenarios kernel-build,bogus", "bogus"),
    c("experiment matrix --scenarios [red]", "[red]"),
    c("experiment matrix --scenarios apache,apache", "apache is given twice", heavy=True),
    c("experiment matrix --scenarios all --repeat 0", "--repeat", heavy=True),
    c("experiment matrix --scenarios all --modes bogus", "bogus"),
    c("experiment matrix --scenarios all --duration 0", "--duration", heavy=True),
    c("experiment matrix --scenarios all --outdir /proc/pyksm", "/proc", heavy=True),
    c("experiment matrix --scenarios all --outdir {file}", "not a directory", heavy=True),
    c("report {tmp}/missing", "missing"),
    c("report {file}", "file.txt"),
    c("report {tmp}", "no experiment results"),
    c("report {results}", "samples.jsonl"),
    c("report {red}", "[red]"),
    c("report {results} --out {file}", "file.txt"),
    c("report {results} --out /proc/pyksm-report", "/proc"),
    c("report {tmp}/broken/res-fifo-samples", "not a regular file"),
    c("report {tmp}/broken/res-config-dir", "config.json"),
    c("report {tmp}/broken/res-config-bin", "config.json"),
    c("report {tmp}/broken/res-scenario-list", "'scenario'"),
    c("report {tmp}/good --out {tmp}/out-fifo", "not a regular file"),
    c("report {tmp}/good --out {tmp}/out-dir", "cannot write the report"),
    c("demo --duration 0", "--duration", heavy=True),
    c("demo --duration -5", "--duration", heavy=True),
    c("demo --duration 1e9", "at most", heavy=True),
    c("demo --outdir /proc/pyksm", "/proc", heavy=True),
    # top
    c("top 0", "interval"),
    c("top -1", "interval"),
    c("top 1 0", "count"),
    c("top 1 -1", "count"),
    c("top x", "interval"),
    c("top --once --prometheus {tmp}/no/dir/ksm.prom", "no/dir"),
    c("top --once --prometheus /proc/ksm.prom", "/proc"),
    c("top --once --prometheus {fifo}", "not a regular file"),
    c("top --once --listen nonsense", "--listen"),
    c("top --once --listen 127.0.0.1:99999", "--listen"),
    # the top level
    c("no-such-command", "no-such-command"),
    c("", "required"),
]


# This host's kernel lacks a feature: one line that names it, exit 2.
STOCK_KERNEL = not Path("/sys/kernel/mm/ksm/hint_capacity").exists()
KPROBES = any(
    Path(d, "kprobe_events").exists() for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
)
FEATURE_CASES: list[Case] = [
    *(
        [
            c("hint 1 0x1000 4096", "KSM++"),
            c("hint --text 1 0x1000 4096", "KSM++"),
            c("collect -p 1 -d 1", "KSM++"),
            c("ksm set hint_capacity=4096", "KSM++"),
        ]
        if STOCK_KERNEL
        else []
    ),
    *([] if KPROBES else [c("collect -p 1 -d 1 --record {tmp}/t --layer vfs-kprobe", "kprobes")]),
]


def _exited_pid() -> str:
    child = subprocess.Popen(["true"])
    child.wait()
    return str(child.pid)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad input [x]")
    (tmp / "file.txt").write_text("a file, not a directory\n")
    (tmp / "junk.bin").write_bytes(b"\x00garbage\xff" * 100)
    (tmp / "empty.bin").write_bytes(b"")
    (tmp / "bad.json").write_text('{"broken": ')
    results = tmp / "results" / "kernel-build"
    (results / "ksm").mkdir(parents=True)
    (results / "config.json").write_text('{"scenario": {"name": "kernel-build"}, "modes": ["ksm"]}')
    (results / "ksm" / "samples.jsonl").write_text('{"t": "soon", "pages_sharing": []}\n')
    from pyksm.collect.tracefile import TraceWriter

    with TraceWriter(tmp / "ok.trace"):
        pass
    (tmp / "cache").mkdir()
    os.mkfifo(tmp / "fifo")
    _snapshot_files(tmp)
    _hint_files(tmp)
    _broken_results(tmp, results)
    _good_results(tmp)
    return {
        "tmp": str(tmp),
        "file": str(tmp / "file.txt"),
        "junk": str(tmp / "junk.bin"),
        "empty": str(tmp / "empty.bin"),
        "json": str(tmp / "bad.json"),
        "results": str(results),
        "trace": str(tmp / "ok.trace"),
        "red": str(tmp / "[red]missing"),
        "pid": _exited_pid(),
        "fifo": str(tmp / "fifo"),
        "npz": str(tmp / "ok.npz"),
    }


def _snapshot_files(tmp: Path) -> None:
    """ok.npz (5 snapshots of 8 pages) and nan-times.npz (one time is NaN)."""
    import numpy as np

    from pyksm.analysis import storage
    from pyksm.analysis.series import SnapshotSeries

    t, per = 5, 8
    n = t * per
    series = SnapshotSeries(
        times=np.arange(t, dtype=np.float64),
        offsets=np.arange(t + 1, dtype=np.int64) * per,
        pid=np.full(n, 100, np.int32),
        vaddr=(np.tile(np.arange(per), t) * 4096 + 0x10000).astype(np.uint64),
        hash=(np.tile(np.arange(per) % 3, t) + 1).astype(np.uint64),
        flags=np.zeros(n, np.uint8),
        pfn=np.zeros(n, np.uint64),
        meta={"page_size": 4096, "pids": [100], "interval": 1.0},
    )
    storage.save(series, tmp / "ok.npz")
    series.times[2] = np.nan  # checked when built, not when saved
    storage.save(series, tmp / "nan-times.npz")
    z = dict(np.load(tmp / "ok.npz"))
    np.savez(tmp / "snap-2d.npz", **{**z, "times": z["times"].reshape(-1, 1)})
    meta = {**json.loads(bytes(z["meta"]).decode()), "ksm_start": "soon"}
    np.savez(
        tmp / "snap-meta.npz", **{**z, "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    )
    one = np.array([1])
    np.savez(tmp / "hints-2d.npz", time=np.zeros((1, 1)), pid=one, start=one, len=one)
    np.savez(tmp / "hints-nan.npz", time=np.array([np.nan]), pid=one, start=one, len=one)


def _hint_files(tmp: Path) -> None:
    (tmp / "latin1.txt").write_bytes(b"0 100 0x1000 4096 # caf\xe9\n")
    (tmp / "latin1.jsonl").write_bytes(b'{"time": 0, "pid": 100, "start": 1, "len": 1}\xff\n')
    (tmp / "negstart.txt").write_text("0 100 -0x1000 4096\n")
    (tmp / "hugelen.txt").write_text(f"0 100 0x1000 {2**64}\n")
    (tmp / "nantime.txt").write_text("nan 100 0x1000 4096\n")
    (tmp / "bigpid.jsonl").write_text('{"time": 0, "pid": 99999999999, "start": 1, "len": 1}\n')


def _broken_results(tmp: Path, good: Path) -> None:
    """Copies of the results fixture, each broken in one more way."""
    import shutil

    def copy(name: str) -> Path:
        return Path(shutil.copytree(good, tmp / "broken" / name))

    d = copy("res-fifo-samples")
    (d / "ksm" / "samples.jsonl").unlink()
    os.mkfifo(d / "ksm" / "samples.jsonl")
    d = copy("res-config-dir")
    (d / "config.json").unlink()
    (d / "config.json").mkdir()
    d = copy("res-config-bin")
    (d / "config.json").write_bytes(b'{"modes": ["ksm"], "scenario": "caf\xe9"}')
    d = copy("res-scenario-list")
    (d / "config.json").write_text('{"scenario": ["kernel-build"], "modes": ["ksm"]}')


def _good_results(tmp: Path) -> None:
    """good/kernel-build: a results directory that makes a report; out-fifo and
    out-dir: report directories where index.html is a FIFO, a directory."""
    d = tmp / "good" / "kernel-build"
    (d / "ksm").mkdir(parents=True)
    (d / "config.json").write_text('{"scenario": {"name": "kernel-build"}, "modes": ["ksm"]}')
    rows = (
        {"t": float(t), "pages_sharing": t, "oracle": 10, "oracle_file": 0, "ksmd_ticks": t}
        for t in range(5)
    )
    (d / "ksm" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp / "out-fifo").mkdir()
    os.mkfifo(tmp / "out-fifo" / "index.html")
    (tmp / "out-dir" / "index.html").mkdir(parents=True)


@dataclass
class Outcome:
    code: int | None  # None: killed after the timeout
    out: str
    err: str


def _child(argv: list[str], out: str, err: str, cwd: str) -> None:
    # What `pyksm` does, in a fresh process: stdout/stderr are files, not terminals.
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    # pytest's capture replaced sys.stdout/sys.stderr: write to the fds again.
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.environ["PYKSM_CACHE"] = os.path.join(cwd, "cache")
    from pyksm.cli import main

    sys.exit(main(argv))


def run_case(argv: list[str], cwd: str, timeout: float = 30.0) -> Outcome:
    """``pyksm ARGV`` in a forked child (pyksm already imported: fast)."""
    out, err = os.path.join(cwd, "stdout"), os.path.join(cwd, "stderr")
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(argv, out, err, cwd))
    proc.start()
    proc.join(timeout)
    code = proc.exitcode
    if proc.is_alive():
        proc.kill()
        proc.join()
        code = None
    return Outcome(
        code, Path(out).read_text(errors="replace"), Path(err).read_text(errors="replace")
    )


WARM = (
    "pyksm.cli",
    "pyksm.analysis.simulator",
    "pyksm.analysis.storage",
    "pyksm.analysis.snapshot",
    "pyksm.analysis.hinttrace",
    "pyksm.collect.session",
    "pyksm.collect.replay",
    "pyksm.experiment.host",
    "pyksm.kernel.hints",
    "pyksm.monitor.top",
    "pyksm.report.render",
)


def _warm() -> None:
    """Import what the commands import, once, so that each forked child starts fast."""
    import importlib

    for name in WARM:
        importlib.import_module(name)


def fill(case: Case, places: dict[str, str]) -> list[str]:
    return [a.format(**places) for a in case.argv]


ALL = CASES + FEATURE_CASES


@pytest.mark.parametrize("case", ALL, ids=[" ".join(x.argv) or "(nothing)" for x in ALL])
def test_bad_input_is_one_line_and_exit_2(
    case: Case, places: dict[str, str], tmp_path: Path
) -> None:
    _warm()

    res = run_case(fill(case, places), str(tmp_path))
    assert res.code is not None, f"hung: stderr {res.err!r}"
    assert "Traceback" not in res.err + res.out, res.err
    assert res.code == case.code, res.err
    lines = res.err.splitlines()
    assert len(lines) == 1, res.err
    assert case.says.format(**places) in lines[0], lines[0]
    assert not (tmp_path / "t").exists(), "a failed collect left a trace file behind"


def test_python_m_pyksm_gives_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyksm", "top", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr

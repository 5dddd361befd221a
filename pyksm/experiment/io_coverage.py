"""Guest I/O modes against the probe layers: of the bytes a real QEMU guest
reads from its disk, how many does a recording collector see landing in the
guest's RAM (issue 15, item 4)?

A cell is one (aio, cache, layer): a guest boots the guest image with
``-drive aio=AIO,cache=CACHE``, ``pyksm collect --qemu --record --layer
LAYER`` records, the guest drops its caches and tars the whole disk.
Coverage is the traced bytes inside the guest's RAM during the tar (events
of the guest's pid between the command and its DONE, clipped to its RAM)
over the bytes the guest read from /dev/vda meanwhile (the agent's DONE).

QEMU's host read path per mode: aio=threads preadv from a thread pool
(syscalls layer); aio=native io_submit, needs cache=none (syscalls layer);
aio=io_uring makes no read syscall, its buffered reads reach only the vfs
layer (filemap_read). Where the disk image lives decides what the vfs layer
sees, so it is copied to a fixed filesystem per cache mode: ramfs for
cache=writeback (the generic page-cache read path of ext4 or xfs:
filemap_read), tmpfs for cache=none (ramfs refuses O_DIRECT; tmpfs takes it
since Linux 6.6). Both need root (mount); this runs inside the test VM.

``measure`` runs several cells at once to keep nested TCG short: one
recording collector per layer; once they are attached, every cell's guest
boots at the same time, then each guest in turn drops and tars and is
powered off. ``measure_cell`` is one cell alone. A cell whose guest does
not boot or whose tar fails is a result with ``error`` set; a tar that is
still running at its timeout is measured up to its last PROGRESS and marked
(``cut_short``; PARTIAL in the table): under a loaded host a nested guest can
be slower than any fixed timeout, and what it read is still a coverage
figure. Every guest, collector and mount is released on every path (one
ExitStack).

``python -m pyksm.experiment.io_coverage`` is the part inside the VM;
``run_in_vm`` the host side (builds the guest image, boots the test kernel).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pyksm.collect import tracefile
from pyksm.collect.stats import CollectStats
from pyksm.control.ranges import clip
from pyksm.errors import PyksmError
from pyksm.events import ReadEvent, probe_name
from pyksm.experiment import qemu_guest
from pyksm.lab import guest_image

__all__ = [
    "COVERED",
    "DEFAULT_CELLS",
    "Cell",
    "CellResult",
    "Reads",
    "Run",
    "format_table",
    "measure",
    "measure_cell",
    "parse_cells",
    "run_in_vm",
    "window_reads",
]

LAYERS = ("syscalls", "vfs")
COVERED = 0.95  # a layer reaches a mode when it sees this share of the guest's reads
DISK_MIB = 40  # the smallest that mke2fs fills (3,722 files of include/, 23 MiB); tarred whole
MEMORY_MIB = 128
COLLECTOR_READY_S = 900.0  # bcc compiles for minutes under nested TCG, beside booting guests
BOOT_TIMEOUT_S = 900.0
TAR_TIMEOUT_S = 900.0
DROP_TIMEOUT_S = 120.0
JOIN_MARGIN_S = 60.0


@dataclass(frozen=True)
class Cell:
    aio: str
    cache: str
    layer: str

    def __post_init__(self) -> None:
        qemu_guest.DriveOptions(self.aio, self.cache)  # refuses what QEMU would
        if self.layer not in LAYERS:
            raise PyksmError(f"layer {self.layer!r}: choose from {', '.join(LAYERS)}")

    @property
    def name(self) -> str:
        return f"{self.aio}/{self.cache}/{self.layer}"

    @classmethod
    def parse(cls, text: str) -> Cell:
        """``AIO/CACHE/LAYER``, e.g. ``io_uring/writeback/vfs``."""
        parts = text.strip().split("/")
        if len(parts) != 3:
            raise PyksmError(f"cell {text!r}: AIO/CACHE/LAYER, e.g. io_uring/writeback/vfs")
        return cls(*parts)

    @property
    def drive(self) -> qemu_guest.DriveOptions:
        return qemu_guest.DriveOptions(self.aio, self.cache, readonly=True)

    @property
    def fs(self) -> str:
        """Where the disk image lives: O_DIRECT needs tmpfs, buffered reads ramfs."""
        return "tmpfs" if self.cache == "none" else "ramfs"

    @property
    def expected_to_reach(self) -> bool:
        """Whether the layer sees this mode's reads: both layers see preadv and
        io_submit; only vfs sees io_uring, and only its buffered (page-cache)
        reads, which go through filemap_read."""
        if self.aio != "io_uring":
            return True
        return self.layer == "vfs" and self.cache == "writeback"


DEFAULT_CELLS = (
    Cell("threads", "writeback", "syscalls"),
    Cell("native", "none", "syscalls"),
    Cell("io_uring", "writeback", "vfs"),
    Cell("io_uring", "writeback", "syscalls"),  # does not reach: recorded to show it
)


def parse_cells(text: str) -> list[Cell]:
    """Comma-separated cells; none given: the default ones."""
    cells = [Cell.parse(t) for t in text.split(",") if t.strip()]
    if len({c.name for c in cells}) != len(cells):
        raise PyksmError(f"cells {text!r}: each cell once")
    return cells or list(DEFAULT_CELLS)


# --- what the trace says ----------------------------------------------------


@dataclass
class Reads:
    """Traced reads of one process in one time window."""

    traced_bytes: int = 0
    inside_ram_bytes: int = 0
    events_by_probe: dict[str, int] = field(default_factory=dict)


def window_reads(
    events: Iterable[ReadEvent],
    pid: int,
    ram: Sequence[tuple[int, int]],
    since_ns: int,
    until_ns: int,
) -> Reads:
    """The reads of ``pid`` stamped in [since_ns, until_ns] (CLOCK_MONOTONIC,
    the probes' clock), and the part of them inside the sorted ``ram`` spans."""
    r = Reads()
    for e in events:
        if e.tgid != pid or not since_ns <= e.ts_ns <= until_ns:
            continue
        r.traced_bytes += e.length
        r.inside_ram_bytes += sum(hi - lo for lo, hi in clip(e.start, e.start + e.length, ram))
        name = probe_name(e.probe)
        r.events_by_probe[name] = r.events_by_probe.get(name, 0) + 1
    return r


# --- results ----------------------------------------------------------------


@dataclass
class CellResult:
    aio: str
    cache: str
    layer: str
    expected_to_reach: bool
    disk_fs: str = ""
    layer_attached: str = ""  # the collector's own name, e.g. vfs-fentry
    guest_read_bytes: int = 0  # from /dev/vda during the tar (the agent's DONE)
    traced_bytes: int = 0
    inside_ram_bytes: int = 0
    coverage: float = 0.0  # inside_ram_bytes / guest_read_bytes
    events_by_probe: dict[str, int] = field(default_factory=dict)
    files: int = 0
    tar_status: int | None = None  # None: no DONE (see cut_short)
    boot_seconds: float | None = None  # QEMU start to READY (the cells boot at once)
    tar_seconds: float | None = None  # host clock, tar command to DONE (or last PROGRESS)
    wall_seconds: float = 0.0  # of the whole measure() that made it (shared by its cells)
    collector_bpf: dict[str, int] = field(default_factory=dict)  # its layer's (ringbuf_full, ...)
    error: str | None = None
    # A tar with no DONE in time, measured up to its last PROGRESS (PARTIAL in
    # the table): why it was cut short. guest_read_bytes is what it had read.
    cut_short: str | None = None

    @property
    def cell(self) -> Cell:
        return Cell(self.aio, self.cache, self.layer)

    @property
    def reaches(self) -> bool:
        return self.error is None and self.coverage >= COVERED

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CellResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


def coverage(inside_ram_bytes: int, guest_read_bytes: int) -> float:
    return inside_ram_bytes / guest_read_bytes if guest_read_bytes > 0 else 0.0


@dataclass
class Run:
    """What ``python -m pyksm.experiment.io_coverage`` writes."""

    cells: list[CellResult]
    wall_seconds: float
    memory_mib: int
    disk: dict[str, Any] = field(default_factory=dict)  # size_mib, files, file_bytes
    kernel: str = ""  # the host (test VM) kernel
    qemu: str = ""  # qemu-system-x86_64 --version

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        part = path.with_name(path.name + ".tmp")
        part.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        part.replace(path)

    @classmethod
    def load(cls, path: Path) -> Run:
        try:
            doc = json.loads(path.read_text())
            cells = [CellResult.from_dict(c) for c in doc["cells"]]
            return cls(
                cells,
                float(doc["wall_seconds"]),
                int(doc["memory_mib"]),
                dict(doc.get("disk", {})),
                str(doc.get("kernel", "")),
                str(doc.get("qemu", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PyksmError(f"{path}: not an io-coverage result ({e})") from None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"


def format_table(results: Sequence[CellResult]) -> list[str]:
    """A plain-text table, one line per cell (a header first)."""
    head = ("aio", "cache", "layer", "read MiB", "traced", "in RAM", "coverage", "reach")
    rows: list[tuple[str, ...]] = [head]
    notes: list[str] = []
    for r in results:
        layer = r.layer + (f" ({r.layer_attached})" if r.layer_attached else "")
        if r.error is not None:
            reach = "ERROR"
            notes.append(f"  {r.cell.name}: {r.error}")
        else:
            reach = "yes" if r.reaches else "no"
            if r.reaches != r.expected_to_reach:
                reach += " (unexpected)"
            if r.cut_short is not None:
                reach += " PARTIAL"
                notes.append(
                    f"  {r.cell.name}: PARTIAL, coverage of the {_mib(r.guest_read_bytes)} MiB "
                    f"read up to the last PROGRESS: {r.cut_short}"
                )
        rows.append(
            (
                r.aio,
                r.cache,
                layer,
                _mib(r.guest_read_bytes),
                _mib(r.traced_bytes),
                _mib(r.inside_ram_bytes),
                f"{r.coverage:.3f}",
                reach,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    for r in results:
        if r.error is None:
            probes = ", ".join(f"{k} {v}" for k, v in sorted(r.events_by_probe.items())) or "none"
            boot = f"{r.boot_seconds:.0f}" if r.boot_seconds is not None else "?"
            tar = f"{r.tar_seconds:.0f}" if r.tar_seconds is not None else "?"
            lost = ", ".join(
                f"{k} {v}" for k, v in sorted(r.collector_bpf.items()) if k != "emitted" and v
            )
            notes.append(
                f"  {r.cell.name}: disk on {r.disk_fs}, {r.files} files, boot {boot} s, "
                f"tar {tar} s, events: {probes}" + (f"; collector lost: {lost}" if lost else "")
            )
    return lines + notes


# --- running the cells ------------------------------------------------------

T = TypeVar("T")


class _Job(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self.value: T | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class _AtOnce:
    """Blocking constructors (a collector's bcc compile, a guest's boot) on
    threads at once. What one makes is released when the ExitStack unwinds,
    also when it finishes after the caller stopped waiting for it."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._lock = threading.Lock()
        self._made: list[Callable[[], None]] = []
        self._closed = False
        stack.callback(self._release)

    def start(self, name: str, make: Callable[[], T], release: Callable[[T], None]) -> _Job[T]:
        job: _Job[T] = _Job(name)

        def run() -> None:
            try:
                value = make()
            except Exception as e:  # reported by wait()
                job.error = e
                return
            with self._lock:
                late = self._closed
                if not late:
                    self._made.append(lambda: release(value))
                    job.value = value
            if late:
                release(value)

        job.thread = threading.Thread(target=run, name=name, daemon=True)
        job.thread.start()
        return job

    @staticmethod
    def wait(job: _Job[T], timeout: float) -> T:
        assert job.thread is not None
        job.thread.join(timeout)
        if job.error is not None:
            if isinstance(job.error, PyksmError):
                raise PyksmError(f"{job.name}: {job.error}") from None
            raise PyksmError(f"{job.name}: {type(job.error).__name__}: {job.error}")
        if job.value is None:
            raise PyksmError(f"{job.name}: not ready within {timeout:g} s")
        return job.value

    def _release(self) -> None:
        with self._lock:
            self._closed = True
            made, self._made = self._made[::-1], []
        for release in made:
            with contextlib.suppress(Exception):
                release()


class Recorder(Protocol):
    def stop(self, timeout: float = ...) -> CollectStats: ...
    def kill(self) -> None: ...


def start_collector(layer: str, trace: Path, log: Path) -> Recorder:
    """``pyksm collect --qemu --record TRACE --layer LAYER``, once attached."""
    args = ["--qemu", "--record", str(trace), "--layer", layer]
    return qemu_guest.Collector(args, log, timeout=COLLECTOR_READY_S)


def place_disk(stack: contextlib.ExitStack, disk: Path, mountpoint: Path, fs: str) -> Path:
    """A copy of ``disk`` on a fresh ramfs or tmpfs at ``mountpoint``
    (unmounted when the stack unwinds)."""
    if fs not in ("ramfs", "tmpfs"):
        raise PyksmError(f"disk filesystem {fs!r}: ramfs or tmpfs")
    mountpoint.mkdir(parents=True, exist_ok=True)
    opts = "mode=0755" + (f",size={disk.stat().st_size + (16 << 20)}" if fs == "tmpfs" else "")
    proc = subprocess.run(
        ["mount", "-t", fs, "-o", opts, f"pyksm-{fs}", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise PyksmError(
            f"cannot mount {fs} on {mountpoint}: {(proc.stderr or proc.stdout).strip()}",
            hint="run as root (the VM test runs it inside the test VM)",
        )
    stack.callback(subprocess.run, ["umount", "-l", str(mountpoint)], capture_output=True)
    copy = mountpoint / disk.name
    shutil.copyfile(disk, copy)
    return copy


@dataclass
class _Tar:
    pid: int
    ram: list[tuple[int, int]]
    since_ns: int
    until_ns: int  # DONE, or the last PROGRESS of a tar cut short
    read_bytes: int
    files: int
    status: int | None  # None: cut short (no DONE within the timeout)
    host_seconds: float
    cut_short: str | None = None  # why, for a tar cut short


def _drop_and_tar(g: qemu_guest.Guest, memory_mib: int, timeout: float) -> _Tar:
    """Drop the guest's caches and tar its disk. A tar with no DONE within
    ``timeout`` that reported PROGRESS is cut short at its last PROGRESS: its
    window ends there and its bytes are those the PROGRESS counted, so coverage
    is still measured, on what it read. One that never reported raises."""
    drop = g.run(qemu_guest.DropCaches(), timeout=DROP_TIMEOUT_S)
    if not drop.ok:
        raise PyksmError(f"drop caches: status {drop.done.status}")
    ram = qemu_guest.guest_ram(g.pid, memory_mib)
    seen: list[tuple[int, qemu_guest.Progress]] = []
    since = time.monotonic_ns()
    try:
        result = g.run(
            qemu_guest.Tar("."),
            timeout=timeout,
            on_progress=lambda p: seen.append((time.monotonic_ns(), p)),
        )
    except PyksmError as e:
        if not seen or seen[-1][1].read_bytes <= 0:
            raise
        at, last = seen[-1]
        return _Tar(
            g.pid, ram, since, at, last.read_bytes, 0, None, (at - since) / 1e9, cut_short=str(e)
        )
    until = time.monotonic_ns()
    done = result.done
    return _Tar(
        g.pid, ram, since, until, done.read_bytes, done.files, done.status, result.host_seconds
    )


def measure(
    image: guest_image.GuestImage,
    cells: Sequence[Cell],
    workdir: Path,
    memory_mib: int = MEMORY_MIB,
    boot_timeout: float = BOOT_TIMEOUT_S,
    tar_timeout: float = TAR_TIMEOUT_S,
    qemu: str = "qemu-system-x86_64",
    collector: Callable[[str, Path, Path], Recorder] = start_collector,
    place: Callable[[contextlib.ExitStack, Path, Path, str], Path] = place_disk,
    say: Callable[[str], None] = print,
) -> list[CellResult]:
    """Every cell of ``cells`` (see the module's doc), in order."""
    if not cells:
        raise PyksmError("no cells to measure")
    if len({c.name for c in cells}) != len(cells):
        raise PyksmError("each cell once")
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    results = [CellResult(c.aio, c.cache, c.layer, c.expected_to_reach, c.fs) for c in cells]
    layers = sorted({c.layer for c in cells})
    traces = {layer: workdir / f"{layer}.trace" for layer in layers}
    stats: dict[str, CollectStats] = {}
    tars: dict[int, _Tar] = {}
    with contextlib.ExitStack() as stack:
        disks = {
            fs: place(stack, image.disk.path, workdir / fs, fs) for fs in {c.fs for c in cells}
        }
        for t in traces.values():
            t.unlink(missing_ok=True)
        at_once = _AtOnce(stack)
        col_jobs = {
            layer: at_once.start(
                f"collector --layer {layer}",
                partial(collector, layer, traces[layer], workdir / f"{layer}.log"),
                lambda c: c.kill(),
            )
            for layer in layers
        }

        def boot(c: Cell) -> qemu_guest.Guest:
            return qemu_guest.Guest(
                image.bzimage,
                disks[c.fs],
                memory_mib=memory_mib,
                boot_timeout=boot_timeout,
                qemu=qemu,
                initrd=image.initramfs,
                drive=c.drive,
                nice=10,
            )

        say(f"io-coverage: {len(layers)} collectors starting")
        collectors: dict[str, Recorder] = {}
        for layer, cjob in col_jobs.items():
            try:
                collectors[layer] = at_once.wait(cjob, COLLECTOR_READY_S + JOIN_MARGIN_S)
            except PyksmError as e:
                for r in results:
                    if r.layer == layer:
                        r.error = str(e)
        # The guests boot once the collectors are attached (``--qemu`` picks up
        # a QEMU started later): under nested TCG, guests at nice 10 booting
        # beside two bcc compiles got so little CPU that none reached READY
        # within 900 s.
        guest_jobs = [
            at_once.start(f"guest {c.name}", partial(boot, c), lambda g: g.close()) for c in cells
        ]
        say(f"io-coverage: {len(cells)} guests booting at once")
        for i, (c, gjob) in enumerate(zip(cells, guest_jobs, strict=True)):
            r = results[i]
            try:
                g = at_once.wait(gjob, boot_timeout + JOIN_MARGIN_S)
            except PyksmError as e:
                r.error = r.error or str(e)
                continue
            try:
                r.boot_seconds = round(g.boot_seconds, 1)
                if r.error is not None:  # its collector did not start
                    continue
                say(f"io-coverage: {c.name}: booted in {g.boot_seconds:.0f} s; drop, tar")
                tar = _drop_and_tar(g, memory_mib, tar_timeout)
                tars[i] = tar
                r.guest_read_bytes = tar.read_bytes
                r.files = tar.files
                r.tar_status = tar.status
                r.tar_seconds = round(tar.host_seconds, 1)
                r.cut_short = tar.cut_short
                if tar.status not in (0, None):
                    r.error = f"tar exited {tar.status}"
            except PyksmError as e:
                r.error = str(e)
            finally:
                g.close()  # its CPU to the next cell's tar
        for layer, col in collectors.items():
            try:
                stats[layer] = col.stop()
            except PyksmError as e:
                for i, r in enumerate(results):
                    if r.layer == layer and r.error is None:
                        r.error = f"collector --layer {layer}: {e}"
                        tars.pop(i, None)
    wall = round(time.monotonic() - t0, 1)
    for i, r in enumerate(results):
        r.wall_seconds = wall
        if r.layer in stats:
            r.layer_attached = stats[r.layer].layer
            r.collector_bpf = dict(stats[r.layer].bpf)
        done = tars.get(i)
        if done is None:
            continue
        reads = window_reads(
            tracefile.read_trace(traces[r.layer]), done.pid, done.ram, done.since_ns, done.until_ns
        )
        r.traced_bytes = reads.traced_bytes
        r.inside_ram_bytes = reads.inside_ram_bytes
        r.events_by_probe = reads.events_by_probe
        r.coverage = round(coverage(reads.inside_ram_bytes, r.guest_read_bytes), 4)
    return results


def measure_cell(image: guest_image.GuestImage, cell: Cell, workdir: Path, **kw: Any) -> CellResult:
    """One cell alone: its collector records, its guest boots, drops its
    caches and tars the disk, the collector stops."""
    (result,) = measure(image, [cell], workdir, **kw)
    return result


def qemu_version(qemu: str = "qemu-system-x86_64") -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.splitlines()[0].strip() if out.stdout else ""


# --- inside the test VM, and the host side ----------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pyksm.experiment.io_coverage",
        description="guest I/O modes x probe layers: coverage of a real guest's disk reads",
    )
    ap.add_argument("--guest-image", type=Path, required=True, help="a saved guest image (JSON)")
    ap.add_argument("--out", type=Path, required=True, help="the results (JSON)")
    ap.add_argument("--workdir", type=Path, required=True, help="traces, logs, disk mounts")
    ap.add_argument("--cells", default="", help="AIO/CACHE/LAYER,... (default: the four)")
    ap.add_argument("--memory-mib", type=int, default=MEMORY_MIB)
    ap.add_argument(
        "--tar-timeout",
        type=float,
        default=TAR_TIMEOUT_S,
        help=f"seconds a guest's tar may run (default {TAR_TIMEOUT_S:.0f}); "
        "one still running then is measured to its last progress line",
    )
    a = ap.parse_args(argv)
    try:
        if not 0 < a.tar_timeout <= TAR_TIMEOUT_S:
            raise PyksmError(f"--tar-timeout must be in (0, {TAR_TIMEOUT_S:.0f}] s")
        cells = parse_cells(a.cells)
        image = guest_image.GuestImage.load(a.guest_image)
        results = measure(
            image,
            cells,
            a.workdir,
            memory_mib=a.memory_mib,
            tar_timeout=a.tar_timeout,
            say=lambda s: print(s, flush=True),
        )
    except PyksmError as e:
        print(f"io-coverage: {e}", file=sys.stderr, flush=True)
        return 1
    d = image.disk
    run = Run(
        results,
        results[0].wall_seconds,
        a.memory_mib,
        {"size_mib": d.size_mib, "files": d.files, "file_bytes": d.file_bytes},
        os.uname().release,
        qemu_version(),
    )
    run.save(a.out)
    for line in format_table(results):
        print(line, flush=True)
    return 0


def vm_timeout(cells: int) -> float:
    """A bound for a hung run: the VM's boot, the start, each cell's drop and tar."""
    start = max(COLLECTOR_READY_S, BOOT_TIMEOUT_S) + JOIN_MARGIN_S
    return 300.0 + start + cells * (TAR_TIMEOUT_S + DROP_TIMEOUT_S) + 300.0


def run_in_vm(
    kernel_bzimage: Path,
    outdir: Path,
    cells: Sequence[Cell],
    disk_mib: int = DISK_MIB,
    memory_mib: int = MEMORY_MIB,
    tar_timeout: float = TAR_TIMEOUT_S,
) -> Run:
    """Build (or take from the cache) the guest image here, boot the test
    kernel and measure ``cells`` inside it; the results, also in
    ``outdir/io-coverage.json`` (traces and logs in ``outdir/work``)."""
    from pyksm.lab import vm

    outdir.mkdir(parents=True, exist_ok=True)
    image = guest_image.build_all(guest_image.DiskRecipe(size_mib=disk_mib))
    saved = outdir / "guest-image.json"
    image.save(saved)
    out = outdir / "io-coverage.json"
    out.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "pyksm.experiment.io_coverage",
        "--guest-image", str(saved),
        "--out", str(out),
        "--workdir", str(outdir / "work"),
        "--cells", ",".join(c.name for c in cells),
        "--memory-mib", str(memory_mib),
        "--tar-timeout", str(tar_timeout),
    ]  # fmt: skip
    res = vm.run(
        vm.VmRequest(
            bzimage=kernel_bzimage,
            command=cmd,
            memory="4G",
            cpus=2,
            outdir=outdir,
            timeout=vm_timeout(len(cells)),
        )
    )
    if not res.ok:
        reports = "\n\n".join(r.text for r in res.reports)
        raise PyksmError(
            f"io-coverage in the test VM failed (exit {res.exit_code}"
            f"{', timed out' if res.timed_out else ''}){': ' + reports if reports else ''}",
            hint=f"console: {res.console_log}, output: {res.output_log}",
        )
    return Run.load(out)


if __name__ == "__main__":
    sys.exit(main())

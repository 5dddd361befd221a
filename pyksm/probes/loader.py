"""Load a read-tracing program from ``bpf/`` with bcc and drain its events in batches.

Two layers, one program each (both include ``bpf/read_common.h``):

- ``syscalls``: ``bpf/read_trace.c``, syscall tracepoints on the read family
  and io_submit; runs on any kernel with syscall tracepoints;
- ``vfs``: ``bpf/vfs_read_trace.c``, kprobes and kretprobes on vfs_read,
  vfs_readv, aio_read and filemap_read; also sees reads that make no read
  syscall (io_uring through filemap_read). Needs kprobes (our test kernel).

``auto`` is ``syscalls``: a syscall tracepoint costs other processes less
than a kretprobe, which every call on the machine enters before the BPF
filter runs.

``ReadProbes`` compiles the program for what the running kernel offers
(pyksm.probes.features), keeps the ``targets`` map (tgid -> trust group) in
step with the controller, and hands back the events gathered since the last
``drain()``: Python runs on its own clock, never once per event.

What can fail: bcc missing (python3-bpfcc), no headers (pyksm.probes.headers
prepares them), no syscall tracepoints or no kprobes for the chosen layer,
not root. Each is a PyksmError.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyksm.errors import PyksmError
from pyksm.probes import features, headers

__all__ = [
    "BPF_SOURCE",
    "LAYER_CHOICES",
    "PROBE_NAMES",
    "ProbeOptions",
    "ReadEvent",
    "ReadProbes",
    "program_text",
    "resolve_layer",
]

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
BPF_SOURCE = BPF_DIR / "read_trace.c"
SOURCES = {"syscalls": BPF_SOURCE, "vfs": BPF_DIR / "vfs_read_trace.c"}
LAYER_CHOICES = ("auto", *features.LAYERS)
# Must match the PROBE_* ids in bpf/read_common.h (the trace format stores
# them): append new ids, never renumber.
PROBE_NAMES: dict[int, str] = {
    1: "read",
    2: "pread64",
    3: "readv",
    4: "preadv",
    5: "preadv2",
    6: "io_submit",
    7: "vfs_read",
    8: "vfs_readv",
    9: "aio_read",
    10: "filemap_read",
}
STAT_NAMES = ("emitted", "ringbuf_full", "short", "iov_cut", "not_user")
_INCLUDE = re.compile(r'^#include "([\w.]+)"$', re.MULTILINE)


class _Event(ctypes.Structure):
    _fields_ = (
        ("ts_ns", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("probe", ctypes.c_uint32),
        ("start", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
    )


@dataclass(frozen=True, slots=True)
class ReadEvent:
    """``len`` bytes read into ``start``.. of ``tgid`` at ``ts_ns`` (CLOCK_MONOTONIC)."""

    ts_ns: int
    tgid: int
    probe: int
    start: int
    length: int


@dataclass(frozen=True)
class ProbeOptions:
    min_bytes: int = 512  # eventfd/pipe reads (8 bytes) stay in the kernel
    max_iov: int = 1024  # IOV_MAX
    ringbuf_pages: int = 1024  # 4 MiB: ~130 k events between drains
    max_drain: int = 65536  # events handed to Python per drain()
    all_tgids: bool = False  # trace every process (benchmarks, discovery)
    syscalls: tuple[str, ...] = features.READ_SYSCALLS  # those the kernel lacks are left out
    layer: str = "auto"  # auto, syscalls or vfs
    functions: tuple[str, ...] = features.VFS_FUNCTIONS  # vfs layer; missing ones left out
    # kretprobe instances per function: every thread in the probed function
    # (anywhere on the machine, e.g. sleeping in read()) holds one.
    maxactive: int = 1024


def resolve_layer(layer: str, feats: features.Features) -> str:
    """``auto`` -> ``syscalls``; ``vfs`` only where the kernel has kprobes."""
    if layer not in LAYER_CHOICES:
        raise PyksmError(f"unknown probe layer {layer!r}: choose from {', '.join(LAYER_CHOICES)}")
    if layer == "auto":
        return "syscalls"
    if layer == "vfs" and not feats.kprobes:
        raise PyksmError(
            "the vfs layer needs kprobes (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS); "
            "this kernel has none",
            hint="use --layer syscalls, or boot the test kernel: pyksm vm run",
        )
    return layer


def _source(path: Path) -> str:
    """``path`` with its ``#include "x.h"`` lines replaced by those files (one level)."""

    def read(p: Path) -> str:
        try:
            return p.read_text()
        except OSError as e:
            raise PyksmError(f"cannot read {p}: {e.strerror}") from None

    def inline(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"/* ---- {name} ---- */\n{read(path.parent / name)}/* ---- end {name} ---- */"

    return _INCLUDE.sub(inline, read(path))


def _vfs_cflags(opts: ProbeOptions, feats: features.Features) -> list[str]:
    unknown = set(opts.functions) - set(features.VFS_FUNCTIONS)
    if unknown:
        raise PyksmError(
            f"cannot probe {', '.join(sorted(unknown))}: choose from "
            f"{', '.join(features.VFS_FUNCTIONS)}"
        )
    chosen = [f for f in opts.functions if f in feats.functions]
    if not chosen:
        raise PyksmError(
            f"none of {', '.join(opts.functions)} can be kprobed on this kernel "
            "(not traceable: inlined, notrace or renamed)",
            hint="use --layer syscalls",
        )
    return [f"-DWITH_{name.upper()}" for name in chosen]


def program_text(opts: ProbeOptions, feats: features.Features) -> tuple[str, list[str]]:
    """The C source and cflags bcc gets (what ``--ebpf`` prints).

    Includes of bpf/ headers are inlined, so the text is the whole program.
    """
    layer = resolve_layer(opts.layer, feats)
    text = _source(SOURCES[layer])
    cflags = [
        "-w",  # kernel headers under clang warn a lot; the program itself is ours
        f"-DMIN_BYTES={opts.min_bytes}",
        f"-DMAX_IOV={opts.max_iov}",
        f"-DRINGBUF_PAGES={opts.ringbuf_pages}",
    ]
    if opts.all_tgids:
        cflags.append("-DALL_TGIDS")
    if layer == "vfs":
        return text, cflags + _vfs_cflags(opts, feats)
    cflags += ["-DMAX_IOCBS=4", "-DMAX_AIO_IOV=8"]
    unknown = set(opts.syscalls) - set(features.READ_SYSCALLS)
    if unknown:
        raise PyksmError(
            f"cannot trace {', '.join(sorted(unknown))}: choose from "
            f"{', '.join(features.READ_SYSCALLS)}"
        )
    chosen = [name for name in opts.syscalls if name in feats.syscalls]
    if not chosen:
        raise PyksmError(
            f"none of {', '.join(opts.syscalls)} has syscall tracepoints on this kernel "
            "(CONFIG_FTRACE_SYSCALLS, tracefs mounted)"
        )
    cflags += [f"-DWITH_{name.upper()}" for name in chosen]
    return text, cflags


class ReadProbes:
    """The loaded program; ``drain()`` returns new events, ``set_targets`` filters."""

    def __init__(self, opts: ProbeOptions | None = None) -> None:
        self.opts = opts or ProbeOptions()
        if os.geteuid() != 0:
            raise PyksmError("tracing needs root", hint="run with sudo")
        self.features = features.probe()
        self.layer = resolve_layer(self.opts.layer, self.features)
        self.syscalls: tuple[str, ...] = ()
        self.functions: tuple[str, ...] = ()
        if self.layer == "vfs":
            self.functions = tuple(f for f in self.opts.functions if f in self.features.functions)
        else:
            self.syscalls = tuple(n for n in self.opts.syscalls if n in self.features.syscalls)
        self.source = SOURCES[self.layer]
        self.headers = headers.ensure_headers()
        try:
            from bcc import BPF
        except ImportError:
            raise PyksmError(
                "bcc is not importable (Debian: python3-bpfcc)",
                hint="make setup; run pyksm from .venv (it sees Debian's dist-packages)",
            ) from None
        text, cflags = program_text(self.opts, self.features)
        try:
            self.bpf: Any = BPF(text=text, cflags=cflags)
        except Exception as e:  # bcc raises plain Exception on compile/load errors
            raise PyksmError(f"bcc could not load {self.source.name}: {e}") from None
        for fn in self.functions:
            try:
                self.bpf.attach_kprobe(event=fn, fn_name=f"{fn}_enter")
                self.bpf.attach_kretprobe(
                    event=fn, fn_name=f"{fn}_exit", maxactive=self.opts.maxactive
                )
            except Exception as e:
                self.bpf.cleanup()
                raise PyksmError(f"cannot attach kprobes to {fn}: {e}") from None
        self._batch: list[ReadEvent] = []
        self.bpf["events"].open_ring_buffer(self._on_event)
        self._targets: dict[int, int] = {}

    def _on_event(self, _ctx: Any, data: Any, _size: int) -> int:
        e = ctypes.cast(data, ctypes.POINTER(_Event)).contents
        self._batch.append(ReadEvent(e.ts_ns, e.tgid, e.probe, e.start, e.len))
        # libbpf consumes until the ring is empty; a target that reads faster
        # than Python parses would keep drain() from ever returning. A negative
        # return stops this round (the event is kept); the rest waits, and the
        # BPF side counts what a full ring drops.
        return -1 if len(self._batch) >= self.opts.max_drain else 0

    def drain(self) -> list[ReadEvent]:
        """Everything the probes emitted since the last call (non-blocking)."""
        self.bpf.ring_buffer_consume()
        batch, self._batch = self._batch, []
        return batch

    def set_targets(self, targets: Mapping[int, int]) -> None:
        """Make the BPF filter trace exactly ``targets`` (tgid -> trust group)."""
        table = self.bpf["targets"]
        for tgid in set(self._targets) - set(targets):
            with contextlib.suppress(KeyError):
                del table[table.Key(tgid)]
        for tgid, group in targets.items():
            if self._targets.get(tgid) != group:
                table[table.Key(tgid)] = table.Leaf(group)
        self._targets = dict(targets)

    @property
    def attached(self) -> tuple[str, ...]:
        """What is traced: syscalls, or kernel functions (vfs layer)."""
        return self.functions if self.layer == "vfs" else self.syscalls

    def stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        out = {name: int(table[i].value) for i, name in enumerate(STAT_NAMES)}
        if self.layer == "vfs":
            out["kprobe_missed"] = self._kprobe_missed()
        return out

    def _kprobe_missed(self) -> int:
        """Misses of our kprobes (a kretprobe misses when all maxactive instances are busy).

        bcc creates kretprobes with maxactive through tracefs as
        ``r_<function>_bcc_<pid>``; kprobe_profile lists hits and misses.
        """
        tf = self.features.tracefs
        if tf is None:
            return 0
        missed = 0
        with contextlib.suppress(OSError):
            for line in (tf / "kprobe_profile").read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0].endswith(f"_bcc_{os.getpid()}"):
                    missed += int(parts[2])
        return missed

    def close(self) -> None:
        self.bpf.cleanup()

"""Load ``bpf/read_trace.c`` with bcc and drain its events in batches.

``ReadProbes`` compiles the program for what the running kernel offers
(pyksm.probes.features), keeps the ``targets`` map (tgid -> trust group) in
step with the controller, and hands back the events gathered since the last
``drain()``: Python runs on its own clock, never once per event.

What can fail: bcc missing (python3-bpfcc), no headers (pyksm.probes.headers
prepares them), no syscall tracepoints, not root. Each is a PyksmError.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyksm.errors import PyksmError
from pyksm.probes import features, headers

__all__ = ["BPF_SOURCE", "PROBE_NAMES", "ReadEvent", "ReadProbes", "program_text"]

BPF_SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "read_trace.c"
# Must match the PROBE_* ids in bpf/read_trace.c (the trace format stores them).
PROBE_NAMES: dict[int, str] = {
    1: "read",
    2: "pread64",
    3: "readv",
    4: "preadv",
    5: "preadv2",
    6: "io_submit",
}
STAT_NAMES = ("emitted", "ringbuf_full", "short", "iov_cut")


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


def program_text(opts: ProbeOptions, feats: features.Features) -> tuple[str, list[str]]:
    """The C source and cflags bcc gets (what ``--ebpf`` prints)."""
    try:
        text = BPF_SOURCE.read_text()
    except OSError as e:
        raise PyksmError(f"cannot read {BPF_SOURCE}: {e.strerror}") from None
    cflags = [
        "-w",  # kernel headers under clang warn a lot; the program itself is ours
        f"-DMIN_BYTES={opts.min_bytes}",
        f"-DMAX_IOV={opts.max_iov}",
        f"-DRINGBUF_PAGES={opts.ringbuf_pages}",
        "-DMAX_IOCBS=4",
        "-DMAX_AIO_IOV=8",
    ]
    if opts.all_tgids:
        cflags.append("-DALL_TGIDS")
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
        self.syscalls = tuple(n for n in self.opts.syscalls if n in self.features.syscalls)
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
            raise PyksmError(f"bcc could not load {BPF_SOURCE.name}: {e}") from None
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

    def stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        return {name: int(table[i].value) for i, name in enumerate(STAT_NAMES)}

    def close(self) -> None:
        self.bpf.cleanup()

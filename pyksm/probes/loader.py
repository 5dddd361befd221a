"""Load a read-tracing program from ``bpf/`` with bcc and drain its events in batches.

Two programs (both include ``bpf/read_common.h``), three layers:

- ``syscalls``: ``bpf/read_trace.c``, syscall tracepoints on the read family
  and io_submit; runs on any kernel with syscall tracepoints;
- ``vfs-fentry``: ``bpf/vfs_read_trace.c`` built with -DTRAMPOLINES, BPF
  trampolines (fentry/fexit) on vfs_read, vfs_readv, aio_read and
  filemap_read; also sees reads that make no read syscall (io_uring through
  filemap_read). Needs BTF and a kernel that lets tracing programs attach
  (our test kernel; this development machine's refuses them);
- ``vfs-kprobe``: the same program with kprobes and kretprobes: the same
  events where trampolines do not work, at a higher cost to every process.

``vfs`` is ``vfs-fentry`` where trampolines attach, else ``vfs-kprobe``.
``auto`` is ``syscalls``: with ``--qemu`` only QEMU's disk-read syscalls are
attached, so a read() loop elsewhere pays least; the vfs functions run for
every read on the machine.

``ReadProbes`` compiles the program for what the running kernel offers
(pyksm.probes.features), keeps the ``targets`` bitmap (a bit per tgid) in
step with the controller, and hands back the events gathered since the last
``drain()``: Python runs on its own clock, never once per event.
``detach()`` / ``attach()`` take the probes off the kernel and put them back
without compiling again (benchmarks compare layers in one boot that way).

What can fail: bcc missing (python3-bpfcc), no headers (pyksm.probes.headers
prepares them), no syscall tracepoints, kprobes or trampolines for the
chosen layer, not root. Each is a PyksmError.
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
from pyksm.events import LAYER_CHOICES, PROBE_NAMES, EventStruct, ReadEvent
from pyksm.probes import features, headers, trampoline

__all__ = [
    "BPF_SOURCE",
    "LAYER_CHOICES",
    "PROBE_NAMES",
    "VFS_PROBE_FOR",
    "ProbeOptions",
    "ReadEvent",
    "ReadProbes",
    "program_text",
    "resolve_layer",
]

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
BPF_SOURCE = BPF_DIR / "read_trace.c"
SOURCES = {
    "syscalls": BPF_SOURCE,
    "vfs-kprobe": BPF_DIR / "vfs_read_trace.c",
    "vfs-fentry": BPF_DIR / "vfs_read_trace.c",
}
# Which vfs-layer probe reports a read made through each interface
# (bpf/vfs_read_trace.c): io_uring's own read path is notrace in 6.12, so
# its page-cache reads come in through filemap_read.
VFS_PROBE_FOR = {
    "read": "vfs_read",
    "pread64": "vfs_read",
    "readv": "vfs_readv",
    "preadv": "vfs_readv",
    "io_submit": "aio_read",
    "io_uring": "filemap_read",
}
# read_trace.c's tracepoints per syscall: io_submit is emitted at entry only.
SYSCALL_PROBES = {"io_submit": ("enter",)}
STAT_NAMES = ("emitted", "ringbuf_full", "short", "iov_cut", "not_user")
_INCLUDE = re.compile(r'^#include "([\w.]+)"$', re.MULTILINE)


@dataclass(frozen=True)
class ProbeOptions:
    min_bytes: int = 512  # eventfd/pipe reads (8 bytes) stay in the kernel
    max_iov: int = 1024  # IOV_MAX
    ringbuf_pages: int = 1024  # 4 MiB: ~130 k events between drains
    max_drain: int = 65536  # events handed to Python per drain()
    all_tgids: bool = False  # trace every process (benchmarks, discovery)
    syscalls: tuple[str, ...] = features.READ_SYSCALLS  # those the kernel lacks are left out
    layer: str = "auto"  # one of LAYER_CHOICES
    functions: tuple[str, ...] = features.VFS_FUNCTIONS  # vfs layers; missing ones left out
    # kretprobe instances per function: every thread in the probed function
    # (anywhere on the machine, e.g. sleeping in read()) holds one.
    maxactive: int = 1024


def needs_trampoline_check(layer: str) -> bool:
    """Whether resolving ``layer`` needs ``features.probe(trampolines=True)``."""
    return layer in ("vfs", "vfs-fentry")


def resolve_layer(layer: str, feats: features.Features) -> str:
    """The concrete layer (``syscalls``, ``vfs-kprobe``, ``vfs-fentry``) for ``layer``.

    ``auto`` -> ``syscalls``; ``vfs`` -> ``vfs-fentry`` where trampolines
    attach, else ``vfs-kprobe``; an explicit layer the kernel cannot run is
    a one-line PyksmError.
    """
    if layer not in LAYER_CHOICES:
        raise PyksmError(f"unknown probe layer {layer!r}: choose from {', '.join(LAYER_CHOICES)}")
    if layer == "auto":
        return "syscalls"
    if layer == "vfs":
        if feats.trampolines:
            return "vfs-fentry"
        if feats.kprobes:
            return "vfs-kprobe"
        raise PyksmError(
            "the vfs layer needs BPF trampolines or kprobes; this kernel has neither "
            f"(fentry: {feats.fentry_error or 'not checked'}; kprobes: CONFIG_KPROBE_EVENTS "
            "missing)",
            hint="use --layer syscalls, or boot the test kernel: pyksm vm run",
        )
    if layer == "vfs-kprobe" and not feats.kprobes:
        raise PyksmError(
            "the vfs-kprobe layer needs kprobes (CONFIG_KPROBES, CONFIG_KPROBE_EVENTS); "
            "this kernel has none",
            hint="use --layer syscalls (or vfs-fentry where BPF trampolines work)",
        )
    if layer == "vfs-fentry" and not feats.trampolines:
        raise PyksmError(
            "the vfs-fentry layer needs BPF trampolines (fentry/fexit), which do not work "
            f"here: {feats.fentry_error or 'not checked'}",
            hint="use --layer syscalls (or vfs-kprobe where kprobes exist)",
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


def _vfs_cflags(opts: ProbeOptions, feats: features.Features, layer: str) -> list[str]:
    unknown = set(opts.functions) - set(features.VFS_FUNCTIONS)
    if unknown:
        raise PyksmError(
            f"cannot probe {', '.join(sorted(unknown))}: choose from "
            f"{', '.join(features.VFS_FUNCTIONS)}"
        )
    fentry = layer == "vfs-fentry"
    here = (feats.fentry_functions or ()) if fentry else feats.functions
    chosen = [f for f in opts.functions if f in here]
    if not chosen:
        how = "hooked with a BPF trampoline" if fentry else "kprobed"
        raise PyksmError(
            f"none of {', '.join(opts.functions)} can be {how} on this kernel "
            "(not traceable: inlined, notrace, renamed, or missing from BTF)",
            hint="use --layer syscalls",
        )
    return (["-DTRAMPOLINES"] if fentry else []) + [f"-DWITH_{name.upper()}" for name in chosen]


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
    if layer != "syscalls":
        return text, cflags + _vfs_cflags(opts, feats, layer)
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


TGID_WORDS = 4194304 // 64  # read_common.h: a bit for every tgid up to PID_MAX_LIMIT


def target_words(old: Mapping[int, int], new: Mapping[int, int]) -> dict[int, int]:
    """The ``targets`` bitmap words (index -> 64 bits) that differ between two target sets."""

    def words(tgids: Mapping[int, int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for tgid in tgids:
            if not 0 < tgid < TGID_WORDS * 64:
                raise PyksmError(f"tgid {tgid} is outside what the kernel hands out")
            out[tgid >> 6] = out.get(tgid >> 6, 0) | 1 << (tgid & 63)
        return out

    before, after = words(old), words(new)
    return {
        w: after.get(w, 0)
        for w in sorted(set(before) | set(after))
        if before.get(w) != after.get(w)
    }


def fentry_marked(functions: tuple[str, ...]) -> frozenset[str]:
    """Outer functions that get an fentry program in vfs-fentry (MARK_* in the C).

    Only filemap_read needs to know whether an outer read is in flight. It
    tells synchronous reads by their kiocb when vfs_read and vfs_readv are
    both probed; AIO reads (aio_read), and either of the two probed alone,
    are marked at entry.
    """
    if "filemap_read" not in functions:
        return frozenset()
    marked = {"aio_read"}
    if not {"vfs_read", "vfs_readv"} <= set(functions):
        marked |= {"vfs_read", "vfs_readv"}
    return frozenset(marked & set(functions))


class ReadProbes:
    """The loaded program; ``drain()`` returns new events, ``set_targets`` filters."""

    def __init__(self, opts: ProbeOptions | None = None) -> None:
        self.opts = opts or ProbeOptions()
        if os.geteuid() != 0:
            raise PyksmError("tracing needs root", hint="run with sudo")
        self.features = features.probe(trampolines=needs_trampoline_check(self.opts.layer))
        self.layer = resolve_layer(self.opts.layer, self.features)
        self.syscalls: tuple[str, ...] = ()
        self.functions: tuple[str, ...] = ()
        if self.layer == "vfs-kprobe":
            self.functions = tuple(f for f in self.opts.functions if f in self.features.functions)
        elif self.layer == "vfs-fentry":
            here = self.features.fentry_functions or ()
            self.functions = tuple(f for f in self.opts.functions if f in here)
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
            # bcc attaches tracepoint and fentry/fexit programs by their names here.
            self.bpf: Any = BPF(text=text, cflags=cflags)
        except Exception as e:  # bcc raises plain Exception on compile/load/attach errors
            raise PyksmError(f"bcc could not load {self.source.name} ({self.layer}): {e}") from None
        self.attached_now = True
        self._batch: list[ReadEvent] = []
        self._targets: dict[int, int] = {}
        try:
            if self.layer == "vfs-kprobe":
                self._attach_kprobes()
            self.bpf["events"].open_ring_buffer(self._on_event)
        except BaseException:
            self.bpf.cleanup()  # nothing stays attached when the start fails
            raise

    def _hooks(self) -> list[tuple[str, str, str]]:
        """(kind, kernel hook, program) for everything this layer attaches."""
        if self.layer == "syscalls":
            return [
                (
                    "tracepoint",
                    f"syscalls:sys_{io}_{name}",
                    f"tracepoint__syscalls__sys_{io}_{name}",
                )
                for name in self.syscalls
                for io in SYSCALL_PROBES.get(name, ("enter", "exit"))
            ]
        if self.layer == "vfs-kprobe":
            return [
                hook
                for fn in self.functions
                for hook in (("kprobe", fn, f"{fn}_enter"), ("kretprobe", fn, f"{fn}_exit"))
            ]
        marked = fentry_marked(self.functions)
        return [
            hook
            for fn in self.functions
            for hook in (
                *((("kfunc", fn, f"kfunc__{fn}"),) if fn in marked else ()),
                ("kretfunc", fn, f"kretfunc__{fn}"),
            )
        ]

    def _attach_kprobes(self) -> None:
        for fn in self.functions:
            try:
                self.bpf.attach_kprobe(event=fn, fn_name=f"{fn}_enter")
                self.bpf.attach_kretprobe(
                    event=fn, fn_name=f"{fn}_exit", maxactive=self.opts.maxactive
                )
            except Exception as e:
                raise PyksmError(f"cannot attach kprobes to {fn}: {e}") from None

    def detach(self) -> None:
        """Take every probe off the kernel; maps, ring buffer and program stay loaded."""
        if not self.attached_now:
            return
        for kind, hook, prog in self._hooks():
            if kind == "tracepoint":
                self.bpf.detach_tracepoint(tp=hook.encode())
            elif kind == "kprobe":
                self.bpf.detach_kprobe(event=hook.encode(), fn_name=prog.encode())
            elif kind == "kretprobe":
                self.bpf.detach_kretprobe(event=hook.encode(), fn_name=prog.encode())
            elif kind == "kfunc":
                self.bpf.detach_kfunc(fn_name=prog.encode())
            else:
                self.bpf.detach_kretfunc(fn_name=prog.encode())
        self.attached_now = False

    def attach(self) -> None:
        """Put the probes back after ``detach()`` (no compile)."""
        if self.attached_now:
            return
        try:
            for kind, hook, prog in self._hooks():
                if kind == "tracepoint":
                    self.bpf.attach_tracepoint(tp=hook.encode(), fn_name=prog.encode())
                elif kind == "kfunc":
                    self.bpf.attach_kfunc(fn_name=prog.encode())
                elif kind == "kretfunc":
                    self.bpf.attach_kretfunc(fn_name=prog.encode())
            if self.layer == "vfs-kprobe":
                self._attach_kprobes()
        except Exception as e:
            raise PyksmError(f"cannot attach the {self.layer} probes again: {e}") from None
        self.attached_now = True

    def _on_event(self, _ctx: Any, data: Any, _size: int) -> int:
        e = ctypes.cast(data, ctypes.POINTER(EventStruct)).contents
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

    def wait(self, timeout_s: float) -> None:
        """Sleep until the probes emit or ``timeout_s`` passes; what arrived
        waits for the next ``drain()``. The BPF side asks for a wakeup only
        when the ring was empty (adaptive notification), so this costs
        nothing while reads keep coming."""
        self.bpf.ring_buffer_poll(max(1, round(timeout_s * 1000)))

    def set_targets(self, targets: Mapping[int, int]) -> None:
        """Make the BPF filter trace exactly ``targets`` (tgid -> trust group).

        The BPF side keeps one bit per tgid (read_common.h); groups stay with
        the controller. Only words that change are written.
        """
        table = self.bpf["targets"]
        for w, bits in target_words(self._targets, targets).items():
            table[table.Key(w)] = table.Leaf(bits)
        self._targets = dict(targets)

    @property
    def attached(self) -> tuple[str, ...]:
        """What is traced: syscalls, or kernel functions (vfs layers)."""
        return self.syscalls if self.layer == "syscalls" else self.functions

    def stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        out = {name: int(table[i].value) for i, name in enumerate(STAT_NAMES)}
        if self.layer == "vfs-kprobe":
            out["kprobe_missed"] = self._kprobe_missed()
        elif self.layer == "vfs-fentry":
            out["prog_missed"] = self._prog_missed()
        return out

    def _prog_missed(self) -> int:
        """Runs of our trampoline programs skipped (already running on that CPU).

        A trampoline has no instance limit; it skips a program only when the
        same program is already running on the CPU (not expected with
        PREEMPT_NONE). A skipped fentry/fexit can lose that read.
        """
        missed = 0
        for _kind, _hook, prog in self._hooks():
            fn = self.bpf.funcs.get(prog.encode())
            if fn is not None:
                missed += trampoline.recursion_misses(fn.fd)
        return missed

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

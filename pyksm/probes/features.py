"""What tracing the running kernel offers, probed rather than guessed.

- syscall tracepoints: ``tracefs/events/syscalls/sys_enter_<name>``
  (CONFIG_FTRACE_SYSCALLS); the read family is traced through these.
- kprobes: ``/sys/bus/event_source/devices/kprobe`` (CONFIG_KPROBE_EVENTS).
  Absent on this development machine's 6.18; present on our test kernel.
  The vfs layer (bpf/vfs_read_trace.c) hooks the kernel functions in
  ``VFS_FUNCTIONS``; those kprobe events can attach to (traceable, see
  ``kernel_functions``) are listed in ``functions``, those a trampoline
  attached to in ``fentry_functions``.
- BPF trampolines (fentry/fexit): kernel BTF plus a real load-and-attach
  attempt per vfs function (pyksm.probes.trampoline), only when asked
  (``probe(trampolines=True)``): this development machine's 6.18 has BTF but
  refuses tracing programs (EPERM); our test kernel accepts them.
- kheaders: ``/sys/kernel/kheaders.tar.xz`` (CONFIG_IKHEADERS).

tracefs is mounted on ``/sys/kernel/tracing`` when it is not mounted yet
(needs root); a failed mount shows up as "no syscall tracepoints".
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pyksm.errors import PyksmError
from pyksm.probes import trampoline

__all__ = [
    "LAYERS",
    "READ_SYSCALLS",
    "VFS_FUNCTIONS",
    "Features",
    "kernel_functions",
    "probe",
]

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
READ_SYSCALLS = ("read", "pread64", "readv", "preadv", "preadv2", "io_submit")
# Kernel functions of the vfs layer, in bpf/vfs_read_trace.c's order.
VFS_FUNCTIONS = ("vfs_read", "vfs_readv", "aio_read", "filemap_read")
# Probe layers: syscalls (bpf/read_trace.c, tracepoints) and the vfs layer
# (bpf/vfs_read_trace.c) hooked with kprobes or with BPF trampolines.
LAYERS = ("syscalls", "vfs-kprobe", "vfs-fentry")
VMLINUX_BTF = trampoline.VMLINUX_BTF
KALLSYMS = Path("/proc/kallsyms")


def tracefs() -> Path | None:
    """Where tracefs is mounted; as root, mounted first if it is not.

    None: not mounted and not root. A mount that fails is a PyksmError that
    says why (not "no tracepoints").
    """
    for path in TRACEFS:
        if (path / "events").is_dir():
            return path
    if os.geteuid() != 0:
        return None
    try:
        proc = subprocess.run(
            ["mount", "-t", "tracefs", "nodev", str(TRACEFS[0])],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PyksmError(f"cannot mount tracefs on {TRACEFS[0]}: {e}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise PyksmError(f"cannot mount tracefs on {TRACEFS[0]}: {why}")
    return TRACEFS[0] if (TRACEFS[0] / "events").is_dir() else None


@dataclass(frozen=True)
class Features:
    tracefs: Path | None
    syscalls: tuple[str, ...] = field(default=())
    kprobes: bool = False
    kheaders: bool = False
    functions: tuple[str, ...] = field(default=())  # of VFS_FUNCTIONS, kprobe-able here
    btf: bool = False  # /sys/kernel/btf/vmlinux
    # Of VFS_FUNCTIONS, those an fexit program attached to; None: not checked.
    fentry_functions: tuple[str, ...] | None = None
    fentry_error: str = ""  # why a trampoline did not attach (the first reason)

    @property
    def trampolines(self) -> bool:
        """BPF trampolines (fentry/fexit) attach here, to at least one vfs function."""
        return bool(self.fentry_functions)

    @property
    def layers(self) -> tuple[str, ...]:
        """The probe layers this kernel can run (vfs-fentry only if checked)."""
        found = []
        if self.syscalls:
            found.append("syscalls")
        if self.kprobes and self.functions:
            found.append("vfs-kprobe")
        if self.trampolines:
            found.append("vfs-fentry")
        return tuple(found)

    def describe(self) -> str:
        kprobes = "no"
        if self.kprobes:
            kprobes = f"yes ({', '.join(self.functions) or 'none of the vfs functions'})"
        if self.fentry_functions is None:
            fentry = "not checked"
        elif self.fentry_functions:
            fentry = f"yes ({', '.join(self.fentry_functions)})"
        else:
            fentry = f"no ({self.fentry_error})"
        return (
            f"layers: {', '.join(self.layers) or 'none'}; "
            f"syscall tracepoints: {', '.join(self.syscalls) or 'none'}; "
            f"kprobes: {kprobes}; "
            f"fentry: {fentry}; "
            f"btf: {'yes' if self.btf else 'no'}; "
            f"kheaders: {'yes' if self.kheaders else 'no'}"
        )


def kernel_functions(
    names: tuple[str, ...], kallsyms: Path = KALLSYMS, tracefs: Path | None = None
) -> tuple[str, ...]:
    """Those of ``names`` that kprobe events can attach to here, in order.

    With ftrace, a kprobe event needs a traceable function: one listed in
    tracefs ``available_filter_functions`` (``static inline`` functions the
    compiler kept out of line are notrace; io_uring's io_iter_do_read is
    one). Without that file: the kernel's text symbols in /proc/kallsyms
    (static functions count, inlined ones are missing).
    """
    wanted = set(names)
    found: set[str] = set()
    filters = tracefs / "available_filter_functions" if tracefs else None
    try:
        if filters is not None and filters.exists():
            with open(filters) as f:
                for line in f:
                    name = line.split(maxsplit=1)[0] if line.strip() else ""
                    if name in wanted:
                        found.add(name)
        else:
            with open(kallsyms) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in ("t", "T") and parts[2] in wanted:
                        found.add(parts[2])
    except OSError:
        return ()
    return tuple(n for n in names if n in found)


def probe(trampolines: bool = False) -> Features:
    """What this kernel offers; ``trampolines``: also try to attach fentry/fexit
    programs to the vfs functions (a few bpf(2) calls; needs root)."""
    tf = tracefs()
    found: list[str] = []
    if tf is not None:
        events = tf / "events" / "syscalls"
        for name in READ_SYSCALLS:
            if (events / f"sys_enter_{name}").is_dir() and (events / f"sys_exit_{name}").is_dir():
                found.append(name)
    kprobes = Path("/sys/bus/event_source/devices/kprobe").is_dir()
    fentry: tuple[str, ...] | None = None
    why = ""
    if trampolines:
        fentry, why = trampoline.check(VFS_FUNCTIONS)
    return Features(
        tracefs=tf,
        syscalls=tuple(found),
        kprobes=kprobes,
        kheaders=Path("/sys/kernel/kheaders.tar.xz").exists(),
        functions=kernel_functions(VFS_FUNCTIONS, tracefs=tf) if kprobes else (),
        btf=VMLINUX_BTF.exists(),
        fentry_functions=fentry,
        fentry_error=why,
    )

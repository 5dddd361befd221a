"""What tracing the running kernel offers, probed rather than guessed.

- syscall tracepoints: ``tracefs/events/syscalls/sys_enter_<name>``
  (CONFIG_FTRACE_SYSCALLS); the read family is traced through these.
- kprobes: ``/sys/bus/event_source/devices/kprobe`` (CONFIG_KPROBE_EVENTS).
  Absent on this development machine's 6.18; present on our test kernel.
- kheaders: ``/sys/kernel/kheaders.tar.xz`` (CONFIG_IKHEADERS).

tracefs is mounted on ``/sys/kernel/tracing`` when it is not mounted yet
(needs root); a failed mount shows up as "no syscall tracepoints".
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["READ_SYSCALLS", "Features", "probe"]

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
READ_SYSCALLS = ("read", "pread64", "readv", "preadv", "preadv2", "io_submit")


def tracefs() -> Path | None:
    for path in TRACEFS:
        if (path / "events").is_dir():
            return path
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS[0])], capture_output=True)
        if (TRACEFS[0] / "events").is_dir():
            return TRACEFS[0]
    return None


@dataclass(frozen=True)
class Features:
    tracefs: Path | None
    syscalls: tuple[str, ...] = field(default=())
    kprobes: bool = False
    kheaders: bool = False

    def describe(self) -> str:
        return (
            f"syscall tracepoints: {', '.join(self.syscalls) or 'none'}; "
            f"kprobes: {'yes' if self.kprobes else 'no'}; "
            f"kheaders: {'yes' if self.kheaders else 'no'}"
        )


def probe() -> Features:
    tf = tracefs()
    found: list[str] = []
    if tf is not None:
        events = tf / "events" / "syscalls"
        for name in READ_SYSCALLS:
            if (events / f"sys_enter_{name}").is_dir() and (events / f"sys_exit_{name}").is_dir():
                found.append(name)
    return Features(
        tracefs=tf,
        syscalls=tuple(found),
        kprobes=Path("/sys/bus/event_source/devices/kprobe").is_dir(),
        kheaders=Path("/sys/kernel/kheaders.tar.xz").exists(),
    )

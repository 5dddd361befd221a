"""A tiny real QEMU guest for tracing experiments: a kernel, the busybox
agent's initramfs and a virtio-blk disk, driven over its serial line.

``pyksm guest-image build`` (pyksm.lab.guest_image) makes the guest kernel,
the initramfs and an ext4 disk holding a real file tree. The agent
(vm-images/qemu-guest/init) prints ``@pyksm READY``, then obeys one command
per line on ttyS0 and answers in ``@pyksm KIND key=value`` lines, parsed
here into Ready / Progress / Done. Workloads are typed (Tar, Cat,
RandomRead, DiskRead, DropCaches); ``Guest.run`` returns a WorkloadResult
with the guest's own numbers and the host-side seconds (the host clock
times everything, so guest clocks under TCG do not matter). The drive's
``aio`` (threads, native, io_uring) and ``cache`` (writeback, none) are
options, since they decide which host syscalls the guest's reads become.
Every wait has a deadline; a guest that dies or hangs is killed, and its
pipes are closed on every path.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyksm.collect import tracefile
from pyksm.collect.process import CollectorProcess
from pyksm.control.ranges import clip
from pyksm.errors import PyksmError
from pyksm.lab import guest_image
from pyksm.procfs import mergeable_spans, read_smaps

AGENT_VERSION = 1
PREFIX = "@pyksm "
AIO_MODES = ("threads", "native", "io_uring")
CACHE_MODES = ("writeback", "none")


def initramfs() -> Path:
    """The agent's initramfs (built once per agent and busybox, cached)."""
    return guest_image.build_initramfs()


def make_disk(path: Path, mib: int) -> Path:
    """A raw disk of pseudo-random data (no filesystem: for ``dd`` only)."""
    if not path.exists() or path.stat().st_size != mib << 20:
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for i in range(mib):
                f.write(block[i % 7 :] + block[: i % 7])
    return path


# --- the agent's replies ---------------------------------------------------


@dataclass(frozen=True)
class Ready:
    agent: int
    uptime_ms: int
    disk: str  # "ro": the ext4 disk is mounted on /mnt; "none"
    kernel: str


@dataclass(frozen=True)
class Progress:
    cmd: str
    elapsed_ms: int
    read_bytes: int


@dataclass(frozen=True)
class Done:
    cmd: str
    status: int
    elapsed_ms: int  # guest clock
    read_bytes: int  # from /dev/vda, per the guest's block layer
    files: int


@dataclass(frozen=True)
class AgentError:
    cmd: str
    text: str


@dataclass(frozen=True)
class Bye:
    pass


Reply = Ready | Progress | Done | AgentError | Bye

_INT_FIELDS = {
    Ready: ("agent", "uptime_ms"),
    Progress: ("elapsed_ms", "read_bytes"),
    Done: ("status", "elapsed_ms", "read_bytes", "files"),
}
_KINDS: dict[str, type[Ready] | type[Progress] | type[Done]] = {
    "READY": Ready,
    "PROGRESS": Progress,
    "DONE": Done,
}
_FIELD = re.compile(r"^([a-z_]+)=(\S*)$")


def parse_reply(line: str) -> Reply | None:
    """One serial line: a reply of the agent, or None for anything else
    (kernel messages, the shell's noise). A malformed reply is an error."""
    at = line.find(PREFIX)
    if at < 0:
        return None
    words = line[at + len(PREFIX) :].strip().split()
    if not words:
        raise PyksmError(f"guest agent: empty reply {line.strip()!r}")
    kind, rest = words[0], words[1:]
    if kind == "BYE":
        return Bye()
    if kind == "ERROR":
        cmd = rest[0][4:] if rest and rest[0].startswith("cmd=") else ""
        return AgentError(cmd, " ".join(rest[1:] if cmd else rest))
    cls = _KINDS.get(kind)
    if cls is None:
        raise PyksmError(f"guest agent: unknown reply {kind!r} in {line.strip()!r}")
    values: dict[str, Any] = {}
    for w in rest:
        m = _FIELD.match(w)
        if not m:
            raise PyksmError(f"guest agent: bad field {w!r} in {line.strip()!r}")
        values[m.group(1)] = m.group(2)
    wanted = set(cls.__dataclass_fields__)
    if missing := wanted - values.keys():
        raise PyksmError(f"guest agent: {kind} without {', '.join(sorted(missing))}")
    args = {k: values[k] for k in wanted}
    for k in _INT_FIELDS[cls]:
        try:
            args[k] = int(args[k])
        except ValueError:
            raise PyksmError(f"guest agent: {k}={args[k]!r} is not a number") from None
    return cls(**args)


# --- workloads -------------------------------------------------------------


def _tree_path(path: str) -> str:
    """A path on the shared disk as the agent takes it (one word, no ``..``)."""
    if not path or any(c.isspace() for c in path) or ".." in path.split("/"):
        raise PyksmError(f"disk path {path!r}: one word inside the disk, e.g. linux/kernel or .")
    return path.strip("/") or "."


@dataclass(frozen=True)
class Tar:
    """``tar cf /dev/null PATH``: a kernel build's sequential walk of a tree."""

    path: str = "."

    def command(self) -> str:
        return f"tar {_tree_path(self.path)}"


@dataclass(frozen=True)
class Cat:
    """``find PATH -type f | xargs cat > /dev/null``."""

    path: str = "."

    def command(self) -> str:
        return f"cat {_tree_path(self.path)}"


@dataclass(frozen=True)
class RandomRead:
    """An apache-like reader: ``count`` files of ``path`` (0: all) in an order
    shuffled with ``seed``, at most ``rate`` files/s (0: as fast as it can)."""

    path: str = "."
    seed: int = 1
    count: int = 0
    rate: int = 0

    def command(self) -> str:
        for name in ("seed", "count", "rate"):
            if getattr(self, name) < 0:
                raise PyksmError(f"random read: {name} must be >= 0")
            # The agent's shell arithmetic is 64-bit: keep well inside it.
            if getattr(self, name) > 2**31 - 1:
                raise PyksmError(f"random read: {name} must be at most 2147483647")
        return f"random {_tree_path(self.path)} {self.seed} {self.count} {self.rate}"


@dataclass(frozen=True)
class DiskRead:
    """``dd`` of the whole raw disk with 1 MiB blocks (no filesystem needed)."""

    def command(self) -> str:
        return "dd"


@dataclass(frozen=True)
class DropCaches:
    """``sync; echo 3 > /proc/sys/vm/drop_caches``."""

    def command(self) -> str:
        return "drop"


Workload = Tar | Cat | RandomRead | DiskRead | DropCaches
WORKLOADS = ("tar", "cat", "random", "dd")


def workload_from(
    name: str, path: str = ".", seed: int = 1, count: int = 0, rate: int = 0
) -> Workload:
    """The workload a command line names (``--workload tar --path include``)."""
    if name == "tar":
        return Tar(path)
    if name == "cat":
        return Cat(path)
    if name == "random":
        return RandomRead(path, seed, count, rate)
    if name == "dd":
        return DiskRead()
    raise PyksmError(f"unknown workload {name!r}: choose from {', '.join(WORKLOADS)}")


@dataclass
class WorkloadResult:
    command: str
    done: Done
    host_seconds: float  # command sent -> DONE received, host clock
    progress: list[Progress] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.done.status == 0

    @property
    def mib_per_s(self) -> float:
        """Disk bytes the guest read per host second."""
        return self.done.read_bytes / (1 << 20) / self.host_seconds if self.host_seconds else 0.0


# --- QEMU ------------------------------------------------------------------


@dataclass(frozen=True)
class DriveOptions:
    """How QEMU opens the disk: ``aio`` and ``cache`` pick the host read path
    (threads: preadv from a thread pool; native: Linux AIO io_submit, needs
    cache=none; io_uring). ``readonly`` lets guests share one image."""

    aio: str = "threads"
    cache: str = "writeback"
    readonly: bool = False
    format: str = "raw"

    def __post_init__(self) -> None:
        if self.aio not in AIO_MODES:
            raise PyksmError(f"aio={self.aio!r}: choose from {', '.join(AIO_MODES)}")
        if self.cache not in CACHE_MODES:
            raise PyksmError(f"cache={self.cache!r}: choose from {', '.join(CACHE_MODES)}")
        if self.aio == "native" and self.cache != "none":
            raise PyksmError("aio=native needs cache=none (QEMU opens the image O_DIRECT)")
        if self.format not in ("raw", "qcow2"):
            raise PyksmError(f"disk format {self.format!r}: raw or qcow2")

    def drive_arg(self, disk: Path) -> str:
        if "," in str(disk):
            raise PyksmError(f"disk path {disk}: QEMU option values cannot hold a comma")
        arg = f"file={disk},format={self.format},if=virtio,aio={self.aio},cache={self.cache}"
        return arg + (",readonly=on" if self.readonly else "")


def qemu_argv(
    bzimage: Path,
    initrd: Path,
    disk: Path,
    memory_mib: int = 128,
    drive: DriveOptions | None = None,
    qmp: Path | None = None,
    qemu: str = "qemu-system-x86_64",
    nice: int | None = None,
) -> list[str]:
    """The command line of one guest: TCG, no NIC, serial on stdio."""
    if memory_mib < 32:
        raise PyksmError(f"guest memory {memory_mib} MiB: at least 32 MiB")
    drive = drive or DriveOptions()
    argv = [
        qemu,
        "-accel", "tcg",
        "-m", str(memory_mib),
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", str(bzimage),
        "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet panic=-1",
        "-drive", drive.drive_arg(disk),
        "-nic", "none",
    ]  # fmt: skip
    if qmp is not None:
        argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if nice is not None:
        argv = ["nice", "-n", str(nice), *argv]
    return argv


class Guest:
    """A running QEMU with the agent; ``run(Tar("linux"))`` -> WorkloadResult.

    ``boot_seconds`` is the host time from the start of QEMU to READY.
    ``qmp``: where QEMU serves a QMP monitor (a unix socket it creates, e.g.
    for ``pyksm.collect.qmp.block_read_bytes``); None: no monitor.
    """

    @classmethod
    def of_image(
        cls,
        image: guest_image.GuestImage,
        drive: DriveOptions,
        boot_timeout: float,
        memory_mib: int = 128,
        nice: int | None = 10,
        console_log: Path | None = None,
        qmp: Path | None = None,
    ) -> Guest:
        """A guest of a built guest image (guest kernel, agent initramfs, shared
        disk); ``qmp``: a QMP socket QEMU serves there (see ``Guest``)."""
        return cls(
            image.bzimage,
            image.disk.path,
            memory_mib=memory_mib,
            qmp=qmp,
            initrd=image.initramfs,
            drive=drive,
            nice=nice,
            boot_timeout=boot_timeout,
            console_log=console_log,
        )

    def __init__(
        self,
        bzimage: Path,
        disk: Path,
        memory_mib: int = 256,
        qmp: Path | None = None,
        boot_timeout: float = 300,
        qemu: str = "qemu-system-x86_64",
        initrd: Path | None = None,
        drive: DriveOptions | None = None,
        nice: int | None = None,
        console_log: Path | None = None,
    ) -> None:
        self.memory_mib = memory_mib
        self.qmp = qmp
        self.drive = drive or DriveOptions()
        self.ready: Ready | None = None
        self._buf = b""
        self._tail = b""  # the console's last lines, for errors
        self._eof = False  # the console closed: QEMU is gone (perhaps not yet reaped)
        # Every console line, kept for the post-mortem of a guest that panics
        self._log = None
        if console_log is not None:
            try:
                self._log = open(console_log, "wb", buffering=0)  # noqa: SIM115 (closed in close())
            except OSError as e:
                raise PyksmError(f"guest console log {console_log}: {e.strerror}") from None
        argv = qemu_argv(
            bzimage, initrd or initramfs(), disk, memory_mib, self.drive, qmp, qemu, nice
        )
        t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        except OSError as e:
            self._close_log()
            raise PyksmError(f"cannot start {argv[0]}: {e.strerror}", hint="make setup") from None
        self.pid = self.proc.pid
        try:
            self.wait_for(b"READY", boot_timeout)
            self.boot_seconds = time.monotonic() - t0
        except BaseException:
            self.close()  # a guest that dies or hangs at boot is not left behind
            raise

    def _line(self, end: float) -> str:
        """The next line of the serial console, by the monotonic time ``end``."""
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not r:
                raise PyksmError(f"QEMU guest silent; output tail: {self._buf[-500:]!r}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:  # EOF: QEMU is gone
                self._eof = True
                raise PyksmError(f"QEMU guest exited; output tail: {self._buf[-500:]!r}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        self._tail = (self._tail + line + b"\n")[-500:]
        if self._log is not None:
            with contextlib.suppress(OSError):  # a full disk must not stop the guest
                self._log.write(line + b"\n")
        return line.decode(errors="replace").rstrip("\r")

    def wait_for(self, token: bytes, timeout: float) -> bytes:
        """Read lines until one holds ``token``; return what was read."""
        end = time.monotonic() + timeout
        seen = b""
        while True:
            try:
                ln = self._line(end)
            except PyksmError:
                how = (
                    f"exited before {token.decode(errors='replace')}"
                    if self._eof or self.proc.poll() is not None
                    else f"no {token!r} within {timeout:g} s"
                )
                raise PyksmError(
                    f"QEMU guest: {how}; output tail: {(self._tail + self._buf)[-500:]!r}"
                ) from None
            seen += ln.encode() + b"\n"
            reply = parse_reply(ln)
            if isinstance(reply, Ready):
                self.ready = reply
            if token in ln.encode():
                return seen

    def _send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        if "\n" in cmd:
            raise PyksmError(f"guest command {cmd!r}: one line")
        try:
            self.proc.stdin.write(cmd.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise PyksmError(f"QEMU guest exited before {cmd!r}") from None

    def run(
        self,
        workload: Workload,
        timeout: float = 600,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> WorkloadResult:
        """Send the workload's command, collect PROGRESS lines until DONE.

        An ERROR reply, a guest that exits, or no DONE within ``timeout``
        raises PyksmError. A non-zero DONE status is returned (``ok``).
        """
        cmd = workload.command()
        t0 = time.monotonic()
        self._send(cmd)
        end = t0 + timeout
        progress: list[Progress] = []
        while True:
            try:
                ln = self._line(end)
            except PyksmError as e:
                why = str(e)
                # A guest that kept reporting is slow, not silent: say how far it got.
                if progress and not self._eof:
                    last = progress[-1]
                    why = (
                        f"still running, last PROGRESS at {last.elapsed_ms / 1000:.1f} s: "
                        f"{last.read_bytes / 2**20:.1f} MiB read"
                    )
                raise PyksmError(f"guest {cmd!r}: no DONE within {timeout:g} s ({why})") from None
            reply = parse_reply(ln)
            if isinstance(reply, AgentError):
                raise PyksmError(f"guest {cmd!r}: {reply.text}")
            if isinstance(reply, Progress):
                progress.append(reply)
                if on_progress:
                    on_progress(reply)
            elif isinstance(reply, Done):
                return WorkloadResult(cmd, reply, time.monotonic() - t0, progress)

    def progress_every(self, seconds: int, timeout: float = 60) -> None:
        """PROGRESS lines every ``seconds`` while a workload runs (0: none)."""
        if seconds < 0:
            raise PyksmError("progress interval must be >= 0 s")
        self._send(f"progress {seconds}")
        end = time.monotonic() + timeout
        while True:
            reply = parse_reply(self._line(end))
            if isinstance(reply, AgentError):
                raise PyksmError(f"guest 'progress': {reply.text}")
            if isinstance(reply, Done):
                return

    def command(self, cmd: str, token: bytes = b"DONE", timeout: float = 600) -> float:
        """Send a raw agent command; the host seconds until ``token``."""
        t0 = time.monotonic()
        self._send(cmd)
        self.wait_for(token, timeout)
        return time.monotonic() - t0

    def close(self, timeout: float = 10) -> None:
        """Power off (``off``), or kill after ``timeout`` s; the pipes are closed either way."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"off\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                if self._buf:  # a last line without its newline (a panic's)
                    self._log.write(self._buf)
                self._log.close()
            self._log = None

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# The collector of a guest experiment: pyksm.collect.process's one helper.
Collector = CollectorProcess


def guest_ram(pid: int, memory_mib: int) -> list[tuple[int, int]]:
    return mergeable_spans(read_smaps(pid), size=memory_mib << 20)


def coverage(trace: Path, pid: int, ram: list[tuple[int, int]], disk_bytes: int) -> dict[str, Any]:
    """Where the traced reads of ``pid`` landed, against guest RAM and the disk size."""
    total = inside = 0
    by_probe: dict[str, int] = {}
    for e in tracefile.read_trace(trace):
        if e.tgid != pid:
            continue
        total += e.length
        inside += sum(hi - lo for lo, hi in clip(e.start, e.start + e.length, ram))
        name = tracefile.probe_name(e.probe)
        by_probe[name] = by_probe.get(name, 0) + 1
    return {
        "traced_bytes": total,
        "inside_ram_bytes": inside,
        "disk_bytes": disk_bytes,
        "inside_fraction": inside / total if total else 0.0,
        "coverage": inside / disk_bytes,
        "events_by_probe": by_probe,
    }

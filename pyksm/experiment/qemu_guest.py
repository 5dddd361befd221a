"""A tiny real QEMU guest for tracing experiments: the test kernel, a busybox
initramfs and a raw virtio-blk disk (aio=threads), driven over its serial line.

The guest prints READY, then obeys one command per line on ttyS0:
``dd`` (drop caches, read the whole disk with 1 MiB blocks, print DONE) and
``off``. The host side times each command, so guest clocks under TCG do not
matter. The initramfs is built once under ~/.cache/pyksm/qemu-guest/.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from pyksm import cache
from pyksm.collect import tracefile
from pyksm.collect.process import CollectorProcess
from pyksm.control.ranges import clip
from pyksm.errors import PyksmError
from pyksm.procfs import mergeable_spans, read_smaps

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo READY
while read cmd; do
  case "$cmd" in
    dd) echo 3 > /proc/sys/vm/drop_caches
        dd if=/dev/vda of=/dev/null bs=1M 2>/dev/null
        echo DONE $? ;;
    off) poweroff -f ;;
  esac
done
"""


def initramfs() -> Path:
    """A gzip'ed cpio with static busybox and the init above (cached)."""
    root = cache.cache_root() / "qemu-guest"
    out = root / "initramfs.cpio.gz"
    if out.exists():
        return out
    tree = root / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    for d in ("bin", "proc", "sys", "dev"):
        (tree / d).mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", tree / "bin" / "busybox")
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    cpio = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input="\n".join(files).encode(),
        cwd=tree,
        capture_output=True,
        check=True,
    ).stdout
    tmp = out.with_suffix(".tmp")
    with gzip.open(tmp, "wb") as f:
        f.write(cpio)
    tmp.rename(out)
    return out


def make_disk(path: Path, mib: int) -> Path:
    """A raw disk of pseudo-random data (compressible data would be fine too)."""
    if not path.exists() or path.stat().st_size != mib << 20:
        block = os.urandom(1 << 20)
        with open(path, "wb") as f:
            for i in range(mib):
                f.write(block[i % 7 :] + block[: i % 7])
    return path


class Guest:
    """A running QEMU; ``command("dd")`` returns the host-side seconds it took."""

    def __init__(
        self,
        bzimage: Path,
        disk: Path,
        memory_mib: int = 256,
        qmp: Path | None = None,
        boot_timeout: float = 300,
        qemu: str = "qemu-system-x86_64",
        initrd: Path | None = None,
    ) -> None:
        self.memory_mib = memory_mib
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
            "-initrd", str(initrd or initramfs()),
            "-append", "console=ttyS0 quiet panic=-1",
            "-drive", f"file={disk},format=raw,if=virtio,aio=threads,cache=writeback",
            "-nic", "none",
        ]  # fmt: skip
        if qmp is not None:
            argv += ["-qmp", f"unix:{qmp},server=on,wait=off"]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        try:
            self.wait_for(b"READY", boot_timeout)
        except BaseException:
            self.close()  # a guest that dies or hangs at boot is not left behind
            raise

    def wait_for(self, token: bytes, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        data = b""
        while token not in data:
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise PyksmError(f"QEMU guest: no {token!r}; output tail: {data[-500:]!r}")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                data += chunk
        return data

    def command(self, cmd: str, token: bytes = b"DONE", timeout: float = 600) -> float:
        assert self.proc.stdin is not None
        t0 = time.monotonic()
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        self.wait_for(token, timeout)
        return time.monotonic() - t0

    def close(self) -> None:
        """Power off (``off``), or kill after 10 s; the pipes are closed either way."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"off\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

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

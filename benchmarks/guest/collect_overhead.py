"""Inside the test kernel: what each probe layer costs a process that is NOT a target.

A 4 KiB read() loop (``dd bs=4k`` of a LOOP_MIB file on ramfs, whose reads
go vfs_read -> filemap_read as on ext4; each read() is followed by dd's
write() to /dev/null) runs with no probes and with each
probe layer attached in turn, in CYCLES cycles, all in one boot:

- ``syscalls``: read_trace.c with every read syscall (what ``-p`` attaches);
- ``syscalls_qemu``: read_trace.c with QEMU's disk-read syscalls only
  (``--qemu``: pread64, preadv, preadv2, io_submit; read() is not hooked,
  but every syscall takes the tracepoint path once one is enabled);
- ``vfs_kprobe``: vfs_read_trace.c with kprobes + kretprobes on all four
  functions (``--layer vfs-kprobe``);
- ``vfs_fentry``: the same with BPF trampolines (``--layer vfs-fentry``;
  what ``--layer vfs`` picks here);
- ``vfs_fentry_outer``: trampolines on vfs_read, vfs_readv and aio_read
  only (``--functions``): fexit programs alone, no filemap_read, no marks.

Each layer is compiled once (``ReadProbes``) and then attached only for its
own runs (``detach()`` / ``attach()``), so the cycles alternate the
conditions without compiling again. The targets map holds one sleeping
process, as a collector's would. The cost is dd's CPU seconds (user +
system), like benchmarks/collect_bench.py's host loop; wall seconds are
kept too. Writes one JSON document to argv[1].
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyksm.collect.cli import QEMU_SYSCALLS
from pyksm.probes import features, loader

LOOP_MIB = int(os.environ.get("LOOP_MIB", "1024"))
CYCLES = int(os.environ.get("CYCLES", "7"))
OUTER = ("vfs_read", "vfs_readv", "aio_read")
LAYERS: dict[str, loader.ProbeOptions] = {
    "syscalls": loader.ProbeOptions(layer="syscalls"),
    "syscalls_qemu": loader.ProbeOptions(layer="syscalls", syscalls=QEMU_SYSCALLS),
    "vfs_kprobe": loader.ProbeOptions(layer="vfs-kprobe"),
    "vfs_fentry": loader.ProbeOptions(layer="vfs-fentry"),
    "vfs_fentry_outer": loader.ProbeOptions(layer="vfs-fentry", functions=OUTER),
}


def dd4k(path: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one dd bs=4k over ``path``."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4k"], capture_output=True, check=True)
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, wall


def main() -> None:
    out = Path(sys.argv[1])
    res: dict[str, object] = {
        "kernel": platform.release(),
        "loop_mib": LOOP_MIB,
        "cycles": CYCLES,
        "features": features.probe(trampolines=True).describe(),
    }
    ram = Path(tempfile.mkdtemp(prefix="overhead-"))
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(ram)], check=True)
    data = ram / "loop.bin"
    block = os.urandom(1 << 20)  # what the pages hold does not matter to read()
    with data.open("wb") as f:
        for _ in range(LOOP_MIB):
            f.write(block)
    sleeper = subprocess.Popen(["sleep", "86400"])  # the one target: never reads
    probes: dict[str, loader.ReadProbes] = {}
    compile_s: dict[str, float] = {}
    try:
        for name, opts in LAYERS.items():
            t0 = time.monotonic()
            p = loader.ReadProbes(opts)
            compile_s[name] = round(time.monotonic() - t0, 1)
            p.set_targets({sleeper.pid: 0})
            p.detach()
            probes[name] = p
            print(
                f"collect_overhead: {name} loaded ({p.layer}: {', '.join(p.attached)}) "
                f"in {compile_s[name]} s",
                flush=True,
            )
        res["compile_s"] = compile_s
        res["attached"] = {name: list(p.attached) for name, p in probes.items()}
        dd4k(data)  # warm
        conditions = ["untraced", *LAYERS]
        cpu: dict[str, list[float]] = {c: [] for c in conditions}
        wall: dict[str, list[float]] = {c: [] for c in conditions}
        for cycle in range(CYCLES):
            # rotate the order so no condition always runs first or last
            order = conditions[cycle % len(conditions) :] + conditions[: cycle % len(conditions)]
            for cond in order:
                p = probes.get(cond)
                if p is not None:
                    p.attach()
                c, w = dd4k(data)
                if p is not None:
                    p.detach()
                cpu[cond].append(c)
                wall[cond].append(w)
            print(
                f"collect_overhead: cycle {cycle + 1}/{CYCLES}: "
                + ", ".join(f"{c} {cpu[c][-1]:.2f}s" for c in conditions),
                flush=True,
            )
        res["cpu_s"] = cpu
        res["wall_s"] = wall
        res["bpf"] = {name: p.stats() for name, p in probes.items()}
        # the loop's reads were never a target's: nothing may have been emitted
        res["emitted"] = {name: p.stats()["emitted"] for name, p in probes.items()}
    finally:
        for p in probes.values():
            p.close()
        sleeper.kill()
        subprocess.run(["umount", str(ram)], check=False)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()

"""Guest-side facts about a booted test kernel, as JSON (``python -m pyksm.lab.facts``).

Runs inside the VM; ``pyksm demo`` prints the result as a table on the host.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

KSM = Path("/sys/kernel/mm/ksm")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def facts() -> dict[str, object]:
    ksm = {p.name: _read(p) for p in sorted(KSM.iterdir())} if KSM.is_dir() else {}
    nodes = sorted(p.name for p in Path("/sys/devices/system/node").glob("node[0-9]*"))
    return {
        "release": platform.release(),
        "cpus": os.cpu_count(),
        "mem_total_kib": next(
            (
                int(line.split()[1])
                for line in (_read(Path("/proc/meminfo")) or "").splitlines()
                if line.startswith("MemTotal:")
            ),
            None,
        ),
        "numa_nodes": nodes,
        "ksm_sysfs": ksm,
        "ksm_hints": KSM.joinpath("hint_capacity").exists(),
        "debugfs_hints": Path("/sys/kernel/debug/ksm/hints_raw").exists(),
        "kheaders": Path("/sys/kernel/kheaders.tar.xz").exists(),
        "btf": Path("/sys/kernel/btf/vmlinux").exists(),
        "kprobes": Path("/sys/kernel/tracing/kprobe_events").exists()
        or Path("/sys/kernel/debug/tracing/kprobe_events").exists(),
    }


def main() -> None:
    debugfs = Path("/sys/kernel/debug")
    if debugfs.is_dir() and not any(debugfs.iterdir()):
        os.system("mount -t debugfs none /sys/kernel/debug 2>/dev/null")
    print("PYKSM-FACTS " + json.dumps(facts()))


if __name__ == "__main__":
    main()

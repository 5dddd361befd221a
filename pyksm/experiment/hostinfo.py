"""The machine an experiment ran on, as ``OUTDIR/SCENARIO/host.json``.

Absolute figures (ksmd µs per page, its CPU share, how fast a burst of
hints is worked off) depend on the host: the same scenario and kernel gave
ksmd 92 µs per scanned page on one 2-CPU host and 41 µs on another, both
under QEMU TCG. Ratios within an experiment hold across hosts far better.
So the host side records what the test VM ran on (CPU model, CPUs, host
kernel, the VM's accelerator, the load average before the run), and the
report names it above its tables.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pyksm.errors import PyksmError
from pyksm.experiment.results import read_json

__all__ = ["FILE", "HostInfo", "describe", "load", "probe", "save"]

FILE = "host.json"


@dataclass(frozen=True)
class HostInfo:
    cpu_model: str
    cpus: int
    kernel: str  # the host's, not the test VM's
    accel: str  # the test VM's accelerator: kvm, tcg, or tcg+icount (vm.VmRequest.icount)
    loadavg_1m_before: float


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first ``model name`` of /proc/cpuinfo ("unknown" without one)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return "unknown"


def probe(accel: str, loadavg_1m: float, cpuinfo: Path = Path("/proc/cpuinfo")) -> HostInfo:
    return HostInfo(
        cpu_model=cpu_model(cpuinfo),
        cpus=os.cpu_count() or 0,
        kernel=platform.release(),
        accel=accel,
        loadavg_1m_before=round(loadavg_1m, 2),
    )


def save(directory: Path, info: HostInfo) -> Path:
    path = directory / FILE
    path.write_text(json.dumps(asdict(info), indent=1) + "\n")
    return path


def load(directory: Path) -> HostInfo | None:
    """``directory/host.json``, or None where it is missing (results from
    before it was written); a clear error where it is not a host record."""
    path = directory / FILE
    if not path.exists():
        return None
    doc: Any = read_json(path)
    want = {f.name: f.type for f in fields(HostInfo)}
    if not isinstance(doc, dict) or set(doc) != set(want):
        raise PyksmError(f"{path}: not a host record (fields {', '.join(sorted(want))})")
    kinds: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "float": (int, float)}
    for name, kind in want.items():
        value = doc[name]
        if isinstance(value, bool) or not isinstance(value, kinds[str(kind)]):
            raise PyksmError(f"{path}: field {name!r} is not a {kind}")
    return HostInfo(**doc)


def describe(info: HostInfo) -> str:
    if info.accel == "tcg+icount":
        return (
            f"host: {info.cpu_model}, {info.cpus} CPUs, Linux {info.kernel}; the test VM ran on "
            "QEMU TCG with an instruction-counted clock (one guest ns per guest instruction, "
            "one vCPU): CPU times count instructions, whatever loaded the host (load average "
            f"{info.loadavg_1m_before:.2f} before the run)."
        )
    return (
        f"host: {info.cpu_model}, {info.cpus} CPUs, Linux {info.kernel}; the test VM ran on "
        f"{'KVM' if info.accel == 'kvm' else 'QEMU ' + info.accel.upper()}; load average "
        f"{info.loadavg_1m_before:.2f} before the run. Absolute times (µs, CPU %) hold for "
        "this host; compare other hosts by the ratios."
    )

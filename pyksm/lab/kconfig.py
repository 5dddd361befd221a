"""Kernel configuration from ``kernel-patches/config/*.config`` fragments.

The test kernel starts from ``make tinyconfig`` and adds fragments:

- ``base.config``  userland and virtme-ng needs (virtio, 9p, overlayfs, ACPI)
- ``test.config``  KSM, debugfs, BPF/kprobes/BTF/kheaders, KUnit, NUMA emulation
- ``vagrant.config`` what a systemd guest on a virtio disk needs (Vagrant lab), KVM
- ``debug.config`` KASAN, KFENCE, lockdep, DEBUG_VM (the ``debug`` variant)
- ``hints.config`` options the KSM++ series adds (patched builds only)
- ``guest.config`` alone: the ``guest`` variant, the small vanilla kernel of the
  real-QEMU guests (``pyksm kernel build --guest``, ``pyksm guest-image``)

Kconfig drops options whose dependencies are unmet without a word, so after
``olddefconfig`` every requested option is checked in the final ``.config``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyksm.errors import PyksmError

VARIANTS = ("test", "debug", "guest")

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


@dataclass(frozen=True)
class Request:
    """One option a fragment asks for; ``value`` None means 'not set'."""

    option: str
    value: str | None
    origin: str  # "file:line"

    def __str__(self) -> str:
        return f"{self.option}={self.value}" if self.value is not None else f"{self.option}=n"


def fragments_for(config_dir: Path, variant: str, patched: bool) -> list[Path]:
    if variant not in VARIANTS:
        raise PyksmError(f"unknown kernel variant {variant!r} (choose from {', '.join(VARIANTS)})")
    if variant == "guest":  # a kernel of its own, never patched: one fragment
        names = ["guest.config"]
    else:
        names = ["base.config", "test.config", "vagrant.config"]
    if variant == "debug":
        names.append("debug.config")
    if patched and variant != "guest" and (config_dir / "hints.config").exists():
        names.append("hints.config")
    paths = [config_dir / n for n in names]
    for p in paths:
        if not p.is_file():
            raise PyksmError(f"config fragment {p} is missing")
    return paths


def parse_fragment(path: Path) -> list[Request]:
    reqs: list[Request] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        origin = f"{path.name}:{lineno}"
        if m := _SET.match(line):
            reqs.append(Request(m.group(1), m.group(2), origin))
        elif m := _UNSET.match(line):
            reqs.append(Request(m.group(1), None, origin))
        elif line and not line.startswith("#"):
            raise PyksmError(f"{origin}: not a kconfig line: {line!r}")
    return reqs


def parse_config(text: str) -> dict[str, str]:
    """Options set in a .config (unset ones are absent)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if m := _SET.match(line.strip()):
            values[m.group(1)] = m.group(2)
    return values


def dropped(requests: list[Request], final: dict[str, str]) -> list[str]:
    """Requested options the final config does not honour, one line each.

    Later fragments override earlier ones, as merge_config.sh does.
    """
    last: dict[str, Request] = {}
    for r in requests:
        last[r.option] = r
    problems = []
    for r in last.values():
        got = final.get(r.option)
        if r.value is None or r.value == "n":
            if got is not None and got != "n":
                problems.append(f"{r.option} asked off ({r.origin}) but is {got}")
        elif got != r.value:
            shown = "not set" if got is None else got
            problems.append(f"{r} ({r.origin}) dropped: final value {shown}")
    return problems

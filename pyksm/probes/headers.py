"""Kernel headers for bcc: find them, or prepare a tree bcc accepts.

bcc compiles its C programs against the running kernel's headers. In order:

1. ``/lib/modules/$(uname -r)/build`` (a distribution kernel with its headers);
2. ``/sys/kernel/kheaders.tar.xz`` (CONFIG_IKHEADERS; our test kernel): bcc
   unpacks it by itself;
3. neither (this development machine's 6.18 kernel): Debian's
   ``linux-headers-amd64`` (6.1) merged into one directory under
   ``~/.cache/pyksm/bcc-headers/``: the ``-common`` tree symlinked, then the
   ``-amd64`` tree symlinked over it, and ``BCC_KERNEL_SOURCE`` pointing there.
   Programs that only use syscall tracepoints are ABI-stable enough for that.

What can fail: no header package installed (``make setup`` installs it).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from pyksm import cache
from pyksm.errors import PyksmError

__all__ = ["ensure_headers"]

USR_SRC = Path("/usr/src")
KHEADERS = Path("/sys/kernel/kheaders.tar.xz")


def _debian_header_pair(usr_src: Path) -> tuple[Path, Path] | None:
    """The newest ``linux-headers-X-amd64`` with its ``-common`` sibling."""
    arch = sorted(usr_src.glob("linux-headers-*-amd64"))
    for tree in reversed(arch):
        common = tree.with_name(tree.name.removesuffix("-amd64") + "-common")
        if common.is_dir() and (tree / "include").is_dir():
            return common, tree
    return None


def prepare_merged_tree(common: Path, arch: Path, dest_root: Path) -> Path:
    """Symlink ``common`` then ``arch`` into ``dest_root/arch.name`` (idempotent)."""
    dest = dest_root / arch.name
    done = dest / ".pyksm-complete"
    if done.exists():
        return dest
    tmp = dest_root / f".{arch.name}.tmp{os.getpid()}"
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    for src, flags in ((common, "-as"), (arch, "-asf")):
        r = subprocess.run(
            ["cp", flags, "--", f"{src}/.", str(tmp)], capture_output=True, text=True
        )
        if r.returncode:
            raise PyksmError(f"preparing bcc headers from {src}: {r.stderr.strip()}")
    (tmp / ".pyksm-complete").write_text(f"{common}\n{arch}\n")
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    tmp.rename(dest)
    return dest


def ensure_headers(usr_src: Path = USR_SRC) -> str:
    """Make sure bcc can find headers; return a one-line description of which."""
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return f"BCC_KERNEL_SOURCE={os.environ['BCC_KERNEL_SOURCE']}"
    build = Path("/lib/modules") / platform.release() / "build"
    if (build / "include").is_dir():
        return str(build)
    if KHEADERS.exists():
        return str(KHEADERS)
    pair = _debian_header_pair(usr_src)
    if pair is None:
        raise PyksmError(
            "bcc needs kernel headers: this kernel has no /lib/modules/*/build, no "
            "kheaders, and no Debian linux-headers-*-amd64 is installed",
            hint="make setup (installs linux-headers-amd64)",
        )
    tree = prepare_merged_tree(*pair, cache.cache_root() / "bcc-headers")
    os.environ["BCC_KERNEL_SOURCE"] = str(tree)
    return f"{tree} (merged from {pair[1].name}; this kernel has no headers of its own)"

"""Find Debian's linux-source-6.12 tarball and unpack it into the cache.

The series targets exactly one upstream version (``# target:`` line in
``kernel-patches/series``); another tree is refused with a clear error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pyksm.errors import PyksmError

PACKAGE = "linux-source-6.12"
TARBALL_DIR = Path("/usr/src")


@dataclass(frozen=True)
class KernelSource:
    """An unpacked, never-modified kernel tree."""

    path: Path
    version: str  # e.g. "6.12.117", from the tree's Makefile
    package_version: str  # e.g. "6.12.117-1~deb12u1", or "unknown"


def find_tarball(install: bool = True) -> Path:
    """Return Debian's source tarball, installing the package if allowed."""
    for suffix in (".tar.xz", ".tar.bz2", ".tar.gz"):
        cand = TARBALL_DIR / f"{PACKAGE}{suffix}"
        if cand.exists():
            return cand
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(
            ["apt-get", "install", "-y", "-qq", PACKAGE],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            return find_tarball(install=False)
    raise PyksmError(
        f"{TARBALL_DIR}/{PACKAGE}.tar.xz not found",
        hint=f"apt-get install {PACKAGE}",
    )


def package_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", PACKAGE],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out or "unknown"


def tree_version(tree: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from a kernel tree's top Makefile."""
    try:
        text = (tree / "Makefile").read_text(errors="replace")
    except OSError as err:
        raise PyksmError(f"{tree} is not a kernel tree: {err.strerror}") from None
    fields: dict[str, str] = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d+)", text, re.M)
        if not m:
            raise PyksmError(f"{tree}/Makefile has no {key}: not a kernel tree")
        fields[key] = m.group(1)
    return "{VERSION}.{PATCHLEVEL}.{SUBLEVEL}".format(**fields)


def unpack(cache: Path, expected_version: str | None) -> KernelSource:
    """Unpack the tarball once into ``cache/src`` and check its version."""
    tarball = find_tarball()
    pkgver = package_version()
    dest = cache / "src" / f"{PACKAGE}_{pkgver}"
    if not (dest / "Makefile").exists():
        tmp = dest.with_name(dest.name + ".unpacking")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        proc = subprocess.run(
            ["tar", "-xf", str(tarball), "-C", str(tmp)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise PyksmError(f"unpacking {tarball} failed: {proc.stderr.strip()[-300:]}")
        inner = [p for p in tmp.iterdir() if p.is_dir()]
        if len(inner) != 1:
            raise PyksmError(f"{tarball}: expected one top directory, found {len(inner)}")
        shutil.rmtree(dest, ignore_errors=True)
        inner[0].rename(dest)
        shutil.rmtree(tmp, ignore_errors=True)
    version = tree_version(dest)
    if expected_version and version != expected_version:
        raise PyksmError(
            f"{tarball} is Linux {version}, but kernel-patches/series targets {expected_version}",
            hint=f"install the matching {PACKAGE} package or rebase the series",
        )
    return KernelSource(path=dest, version=version, package_version=pkgver)

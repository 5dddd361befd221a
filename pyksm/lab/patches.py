"""Read ``kernel-patches/series`` and keep a patched copy of the source tree.

The patched tree is a copy of the pristine tree. When the series changes, only
the files the old and new series touch are restored from the pristine tree
and patched again, so kbuild rebuilds just what changed (seconds, not minutes).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from pyksm.errors import PyksmError

STATE_FILE = ".pyksm-series.json"


@dataclass(frozen=True)
class Series:
    """The ordered patch list plus the upstream version it targets."""

    directory: Path
    patches: tuple[Path, ...]
    target_version: str | None
    digest: str = field(default="")

    @property
    def empty(self) -> bool:
        return not self.patches


def read_series(directory: Path) -> Series:
    """Parse ``series``: one patch name per line; ``# target: PKG VERSION``."""
    series_file = directory / "series"
    if not series_file.exists():
        return Series(directory, (), None, hashlib.sha256(b"").hexdigest())
    target: str | None = None
    names: list[str] = []
    for lineno, raw in enumerate(series_file.read_text().splitlines(), 1):
        line = raw.strip()
        m = re.match(r"#\s*target:\s*\S+\s+(\S+)", line)
        if m:
            target = m.group(1)
            continue
        if not line or line.startswith("#"):
            continue
        path = directory / line
        if not path.is_file():
            raise PyksmError(f"{series_file}:{lineno}: patch {line!r} does not exist")
        names.append(line)
    h = hashlib.sha256()
    h.update((target or "").encode())
    for name in names:
        h.update(name.encode() + b"\0")
        h.update((directory / name).read_bytes())
    return Series(directory, tuple(directory / n for n in names), target, h.hexdigest())


def touched_files(patch: Path) -> set[str]:
    """Paths (relative to the tree) that a -p1 patch creates, changes or removes."""
    files: set[str] = set()
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith(("--- ", "+++ ")):
            name = line[4:].split("\t")[0].strip()
            if name == "/dev/null":
                continue
            files.add(name.split("/", 1)[1] if "/" in name else name)
    return files


def _restore(pristine: Path, tree: Path, rel: str) -> None:
    src, dst = pristine / rel, tree / rel
    if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    elif dst.exists():
        dst.unlink()


def _explain_failure(patch: Path, output: str) -> str:
    """Turn GNU patch's output into 'file: Hunk #N FAILED at L' lines."""
    current = "?"
    failed: list[str] = []
    for line in output.splitlines():
        m = re.match(r"(?:checking|patching) file (.+)", line)
        if m:
            current = m.group(1).strip()
        m = re.match(r"(Hunk #\d+ FAILED at \d+.*?)\.?$", line)
        if m:
            failed.append(f"{current}: {m.group(1)}")
        if "can't find file to patch" in line or "No file to patch" in line:
            failed.append(f"{current}: file not found")
    if not failed:
        lines = output.strip().splitlines()
        failed.append(lines[-1] if lines else "unknown reason")
    return f"patch {patch.name} does not apply: {'; '.join(failed)}"


def apply_series(pristine: Path, tree: Path, series: Series) -> None:
    """Make ``tree`` equal to ``pristine`` plus ``series``, touching little."""
    if not (tree / "Makefile").exists():
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(tree)], check=True)
        state: dict[str, object] = {"digest": "", "touched": []}
    else:
        try:
            state = json.loads((tree / STATE_FILE).read_text())
        except (OSError, ValueError):
            state = {"digest": "?", "touched": []}
    if state.get("digest") == series.digest and state.get("complete"):
        return
    new_touched: set[str] = set()
    for p in series.patches:
        new_touched |= touched_files(p)
    old_touched = {str(x) for x in cast(list[str], state.get("touched", []))}
    if state.get("digest") == "?":
        raise PyksmError(
            f"{tree} has no readable {STATE_FILE}; cannot tell what is patched",
            hint=f"rm -rf {tree}",
        )
    # Record the union first: a crash mid-way still knows what to restore.
    (tree / STATE_FILE).write_text(
        json.dumps({"digest": series.digest, "touched": sorted(old_touched | new_touched)})
    )
    for rel in sorted(old_touched | new_touched):
        _restore(pristine, tree, rel)
    for patch in series.patches:
        proc = subprocess.run(
            ["patch", "-p1", "-N", "--no-backup-if-mismatch", "-r", "-", "-i", str(patch)],
            cwd=tree,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise PyksmError(_explain_failure(patch, proc.stdout + proc.stderr))
    (tree / STATE_FILE).write_text(
        json.dumps({"digest": series.digest, "touched": sorted(new_touched), "complete": True})
    )

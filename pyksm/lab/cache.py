"""Where the lab keeps unpacked sources, object trees and finished builds.

Everything lives under ``$PYKSM_CACHE`` (default ``~/.cache/pyksm``) so that
CI runs and tests on the same machine reuse one another's kernel builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("PYKSM_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "pyksm"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def build_lock(root: Path | None = None) -> Iterator[None]:
    """Hold the machine-wide kernel build lock.

    Two kernel builds on a 2-core machine only slow each other down; every
    builder (pyksm and developers' shells via ``flock``) takes this lock.
    """
    path = (root or cache_root()) / "build.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

"""pyksm's cache directory: unpacked sources, kernel builds, bcc headers, guest images.

Everything lives under ``$PYKSM_CACHE`` (default ``~/.cache/pyksm``) so that
CI runs and tests on the same machine reuse one another's work.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    env = os.environ.get("PYKSM_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "pyksm"
    root.mkdir(parents=True, exist_ok=True)
    return root

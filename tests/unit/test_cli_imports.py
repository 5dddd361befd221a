"""Building the CLI's parser stays light: every ``pyksm`` command (the
collectors started inside a TCG VM among them) builds it first, and
matplotlib, numba or bcc would cost seconds to minutes there."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("matplotlib", "numba", "bcc")


def test_building_the_parser_imports_no_heavy_module() -> None:
    code = (
        "import sys, pyksm.cli; pyksm.cli.parser(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout

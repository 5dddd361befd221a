"""The command line's two consoles, and how user data is printed through them.

Logs and CI are not terminals: tables get room instead of 80 columns.
Anything that came from the user or the system (paths, names, values) goes
through :func:`escape` before rich sees it, so ``[red]`` prints as is.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

__all__ = ["err", "error_line", "escape", "out"]

err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 160)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def error_line(message: str, hint: str | None = None) -> str:
    """The one line (rich markup, user text escaped) that reports a failure."""
    line = f"[bold red]pyksm: error:[/] {escape(message)}"
    if hint:
        line += f" [dim](fix: {escape(hint)})[/]"
    return " ".join(line.split("\n"))

"""Argument types shared by every subcommand's parser, and the parser class.

Numbers are range-checked and paths checked while the command line is
parsed, so a bad value is a one-line usage error (exit 2) before anything
starts: no kernel build, no VM, no probe. Each type raises
``argparse.ArgumentTypeError``; :class:`Parser` prints it as one line.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pyksm.errors import PyksmError

__all__ = [
    "Parser",
    "address",
    "checked",
    "comma_list",
    "existing_dir",
    "existing_file",
    "listen_address",
    "memory_size",
    "no_special_file",
    "nonneg_float",
    "nonneg_int",
    "open_fd",
    "output_dir",
    "output_file",
    "pid",
    "positive_float",
    "positive_int",
]

T = TypeVar("T")

# Kernel pseudo-filesystems: nothing pyksm writes belongs there.
_PSEUDO = (Path("/proc"), Path("/sys"), Path("/dev"))


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``PROG: error: MESSAGE``."""

    def error(self, message: str) -> NoReturn:
        line = " ".join(f"{self.prog}: error: {message}".split())
        sys.stderr.write(line + "\n")
        sys.exit(2)


def _number(text: str, kind: Callable[[str], T]) -> T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _int(text: str) -> int:
    return int(text, 0)


def _at_least(
    kind: Callable[[str], float], low: float, strict: bool, what: str
) -> Callable[[str], Any]:
    """A parser of finite numbers >= ``low`` (> ``low`` when ``strict``)."""

    def parse(text: str) -> Any:
        x = _number(text, kind)
        if x != x or x in (float("inf"), float("-inf")) or x < low or (strict and x == low):
            raise argparse.ArgumentTypeError(f"{what}, not {text}")
        return x

    return parse


positive_int: Callable[[str], int] = _at_least(_int, 1, False, "must be at least 1")
positive_int.__doc__ = "An integer >= 1 (0x... accepted)."
nonneg_int: Callable[[str], int] = _at_least(_int, 0, False, "must be 0 or more")
nonneg_int.__doc__ = "An integer >= 0 (0x... accepted)."
positive_float: Callable[[str], float] = _at_least(float, 0, True, "must be more than 0")
positive_float.__doc__ = "A finite number > 0 (seconds, milliseconds)."
nonneg_float: Callable[[str], float] = _at_least(float, 0, False, "must be 0 or more")
nonneg_float.__doc__ = "A finite number >= 0."
pid: Callable[[str], int] = _at_least(int, 1, False, "not a process id")
pid.__doc__ = "A process id (>= 1)."


def address(text: str) -> int:
    """A virtual address (0x... accepted), >= 0."""
    return nonneg_int(text)


_SIZE = re.compile(r"^[1-9][0-9]*[KMGT]?$", re.IGNORECASE)


def memory_size(text: str) -> str:
    """A QEMU memory size: NUMBER with an optional K, M, G or T (e.g. 2G)."""
    if not _SIZE.match(text):
        raise argparse.ArgumentTypeError(f"not a memory size (e.g. 2G, 512M): {text!r}")
    return text


def comma_list(text: str) -> tuple[str, ...]:
    """A non-empty comma-separated list of names."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"an empty list: {text!r}")
    return items


def listen_address(text: str) -> tuple[str, int]:
    """ADDR:PORT or PORT (address 127.0.0.1); PORT 0 picks a free one."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ADDR:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not 0..65535")
    return host, port


def open_fd(text: str) -> int:
    """A file descriptor this process has open (inherited from its parent)."""
    fd = nonneg_int(text)
    try:
        os.fstat(fd)
    except OSError:
        raise argparse.ArgumentTypeError(f"file descriptor {fd} is not open") from None
    return fd


def _pseudo(path: Path) -> Path | None:
    resolved = path.resolve()
    for root in _PSEUDO:
        if resolved == root or resolved.is_relative_to(root):
            return root
    return None


def _special(path: Path) -> bool:
    """A FIFO, a socket or a device: opening or reading it could wait forever."""
    return path.exists() and not path.is_file() and not path.is_dir()


def no_special_file(path: Path) -> Path:
    """``path``, unless a FIFO, a socket or a device is in its place (PyksmError)."""
    if _special(path):
        raise PyksmError(f"{path}: not a regular file")
    return path


def existing_file(text: str) -> Path:
    """A file that exists (to read)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if _special(path):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_dir(text: str) -> Path:
    """A directory that exists (to read)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} is not a directory" if path.exists() else f"{text}: no such directory"
        )
    return path


def output_file(text: str) -> Path:
    """A file to create or append to: its directory exists, it is not one."""
    if not text:
        raise argparse.ArgumentTypeError("an empty file name")
    path = Path(text)
    root = _pseudo(path)
    if root is not None:
        raise argparse.ArgumentTypeError(f"{text}: {root} is not a place for output files")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if _special(path):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} {what}")
    return path


def output_dir(text: str) -> Path:
    """A directory to write into (made if missing): no file in its way."""
    if not text:
        raise argparse.ArgumentTypeError("an empty directory name")
    path = Path(text)
    root = _pseudo(path)
    if root is not None:
        raise argparse.ArgumentTypeError(f"{text}: {root} is not a place for output")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {probe} is not a directory")
    return path


def checked(fn: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser that raises PyksmError (one message, either way)."""

    def convert(text: str) -> T:
        try:
            return fn(text)
        except PyksmError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(fn, "__name__", "value")
    return convert

"""Waiting for a condition with a deadline: the one poll loop pyksm uses.

A wait that runs out raises (PyksmError, naming what did not happen and
how long it was given), so no caller goes on as if it had happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from pyksm.errors import PyksmError

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, poll: float = 0.1) -> T:
    """Call ``check`` every ``poll`` seconds until it returns a true value; return it.

    After ``timeout`` seconds: PyksmError "WHAT: not within TIMEOUT s".
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise PyksmError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)

"""Start ``pyksm collect`` as a child process and know when it is ready.

The collector writes one line to ``--ready-fd N`` once its probes are
attached and its targets set (bcc compiles first: seconds natively, a
minute or more under TCG). The parent waits on that pipe, with a deadline,
instead of scanning the collector's log for a word. Used by the experiment
runner, the QEMU guest helper and the tests.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pyksm.collect.stats import CollectStats
from pyksm.errors import PyksmError

__all__ = ["CollectorProcess"]


class CollectorProcess:
    """``pyksm collect ARGS`` (``--json``: its statistics are :meth:`stop`'s result).

    The constructor returns once the collector is ready, or raises after
    killing it: it exited first, or ``timeout`` seconds passed. As a context
    manager, a collector still running at exit is killed and reaped.
    """

    def __init__(
        self,
        args: list[str],
        log: Path,
        timeout: float = 600.0,
        stats: bool = True,
        python: str = sys.executable,
    ) -> None:
        self.log = log
        self.stats = stats
        read_end, write_end = os.pipe()
        argv = [python, "-m", "pyksm", "collect", *args, "--ready-fd", str(write_end)]
        try:
            with open(log, "w") as log_file:
                self.proc = subprocess.Popen(
                    [*argv, "--json"] if stats else argv,
                    stdout=subprocess.PIPE if stats else log_file,
                    stderr=log_file,
                    text=True,
                    pass_fds=(write_end,),
                )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        try:
            self._wait_ready(read_end, timeout)
        except BaseException:
            self.kill()
            raise
        finally:
            os.close(read_end)

    def _wait_ready(self, fd: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            if os.read(fd, 64):
                return
            # EOF: the collector exited (or closed the fd) without being ready.
            code = self.proc.wait(timeout=30)
            raise PyksmError(f"the collector exited at start (exit {code}): {self._tail()}")
        raise PyksmError(f"the collector was not ready within {timeout:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"no log {self.log}"
        return lines[-1] if lines else f"empty log {self.log}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def interrupt(self, timeout: float = 60.0) -> str:
        """SIGINT, wait for the collector to finish; returns its stdout."""
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PyksmError(f"the collector did not stop within {timeout:.0f} s") from None
        if self.proc.returncode != 0:
            raise PyksmError(f"the collector exited {self.proc.returncode}: {self._tail()}")
        return out or ""

    def stop(self, timeout: float = 60.0) -> CollectStats:
        """SIGINT, then its final statistics (a collector started with ``stats``)."""
        if not self.stats:
            raise ValueError("stop() needs a collector started with stats=True; use interrupt()")
        out = self.interrupt(timeout)
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as e:
            raise PyksmError(f"the collector's statistics are not JSON ({e.msg})") from None
        return CollectStats.from_dict(doc, "the collector's statistics")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

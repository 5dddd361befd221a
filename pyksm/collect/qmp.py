"""Ask a QEMU, through its QMP socket, which process it is and how much RAM it
has, or how much its guest has read from a disk.

The process is the socket's peer (SO_PEERCRED), so no pid has to be given;
the RAM size (``query-memory-size-summary``: base-memory) picks guest RAM
among the mergeable mappings. The bytes read (``query-blockstats``:
rd_bytes of a drive, since QEMU started) give a guest's read progress from
the host, whatever the guest is doing. Speaks QMP with the ``qemu.qmp``
package; each query is one connection, closed before it returns.

Nothing here waits forever: the connection, the greeting and each command
have a timeout. QEMU serves one QMP client per monitor at a time and leaves
a second one connected but unanswered, so a socket that another client
(libvirt always holds one) has is told apart from one that is not QMP.
Each failure is one PyksmError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass

from pyksm.errors import PyksmError

__all__ = ["QemuRam", "block_read_bytes", "query"]

# qemu.qmp logs each failure at ERROR; pyksm reports it once, as its own line.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())
logging.getLogger("qemu.qmp").propagate = False


@dataclass(frozen=True)
class QemuRam:
    pid: int
    ram_bytes: int


def _peer_pid(path: str, timeout: float) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])
    except TimeoutError:
        raise PyksmError(f"QMP socket {path}: no connection within {timeout:g} s") from None
    except OSError as e:
        raise PyksmError(f"QMP socket {path}: {e.strerror or e}") from None
    finally:
        s.close()


async def _execute(path: str, command: str, timeout: float) -> object:
    """``command``'s reply: connect, greeting, command and disconnect each
    within ``timeout``; the connection is closed on every path."""
    from qemu.qmp import QMPClient

    client = QMPClient("pyksm")
    try:
        try:
            await asyncio.wait_for(client.connect(path), timeout)
        except TimeoutError:
            raise PyksmError(
                f"QMP socket {path}: connected, but QEMU sent no greeting within {timeout:g} s: "
                "another client (libvirt?) holds this monitor; QEMU serves one at a time",
                hint="give pyksm a QMP socket of its own (-qmp unix:PATH,server=on,wait=off)",
            ) from None
        try:
            return await asyncio.wait_for(client.execute(command), timeout)
        except TimeoutError:
            raise PyksmError(
                f"QMP socket {path}: no answer to {command} within {timeout:g} s"
            ) from None
    except PyksmError:
        raise
    except Exception as e:  # qemu.qmp raises several unrelated types
        raise PyksmError(f"QMP socket {path}: {e}") from None
    finally:
        # A failed disconnect changes nothing here.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout)


def query(path: str, timeout: float = 5.0) -> QemuRam:
    """The QEMU behind ``path``: its pid and RAM size; at most about 3 timeouts long."""
    pid = _peer_pid(path, timeout)
    reply = asyncio.run(_execute(path, "query-memory-size-summary", timeout))
    try:
        ram = int(reply["base-memory"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise PyksmError(f"QMP socket {path}: unexpected reply {reply!r}") from None
    return QemuRam(pid, ram)


def block_read_bytes(path: str, device: str = "virtio0", timeout: float = 5.0) -> int:
    """Bytes the QEMU behind ``path`` has read for its guest from drive
    ``device`` since it started (``query-blockstats``: rd_bytes; a ``-drive
    if=virtio`` without an id is virtio0), or from its only drive when none
    has that name; at most about 3 timeouts long."""
    return rd_bytes(asyncio.run(_execute(path, "query-blockstats", timeout)), device, path)


def rd_bytes(reply: object, device: str, path: str) -> int:
    """rd_bytes of ``device`` (or of the only drive) in a query-blockstats reply."""
    if not isinstance(reply, list):
        raise PyksmError(f"QMP socket {path}: unexpected query-blockstats reply {reply!r:.200}")
    named = [d for d in reply if isinstance(d, dict) and d.get("device") == device]
    if not named and len(reply) == 1:
        named = reply
    if len(named) != 1:
        names = [d.get("device") for d in reply if isinstance(d, dict)]
        raise PyksmError(f"QMP socket {path}: no single drive {device!r} among {names}")
    try:
        rd = named[0]["stats"]["rd_bytes"]
    except (KeyError, TypeError):
        rd = None
    if isinstance(rd, bool) or not isinstance(rd, int):
        raise PyksmError(f"QMP socket {path}: no rd_bytes in {named[0]!r:.200}")
    return rd

"""Ask a QEMU, through its QMP socket, which process it is and how much RAM it has.

The process is the socket's peer (SO_PEERCRED), so no pid has to be given;
the RAM size (``query-memory-size-summary``: base-memory) picks guest RAM
among the mergeable mappings. Uses the ``qemu.qmp`` package.

What can fail: no such socket, a socket that is not QMP, a QEMU busy with
another QMP client (QEMU serves one at a time). Each is a PyksmError.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pyksm.errors import PyksmError

__all__ = ["QemuRam", "query"]


@dataclass(frozen=True)
class QemuRam:
    pid: int
    ram_bytes: int


def _peer_pid(path: str) -> int:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(path)
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return int(struct.unpack("3i", creds)[0])
    except OSError as e:
        raise PyksmError(f"QMP socket {path}: {e.strerror or e}") from None
    finally:
        s.close()


def query(path: str, timeout: float = 5.0) -> QemuRam:
    pid = _peer_pid(path)
    from qemu.qmp.legacy import QEMUMonitorProtocol

    qmp = QEMUMonitorProtocol(path)
    try:
        qmp.connect()
        reply = qmp.cmd("query-memory-size-summary")
    except Exception as e:  # qemu.qmp raises several unrelated types
        raise PyksmError(f"QMP socket {path}: {e}") from None
    finally:
        qmp.close()
    try:
        ram = int(reply["base-memory"])  # type: ignore[call-overload,index]
    except (KeyError, TypeError, ValueError):
        raise PyksmError(f"QMP socket {path}: unexpected reply {reply!r}") from None
    return QemuRam(pid, ram)

"""--qmp never hangs: a silent socket is a clear error; a QMP server gives pid and RAM."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyksm.collect import qmp
from pyksm.errors import PyksmError

GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 8}, "package": ""},
        "capabilities": [],
    }
}


def _serve(path: Path, handle: Callable[[socket.socket], None]) -> Iterator[None]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    conns: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join(5)
        for c in conns:
            c.close()
        srv.close()


@pytest.fixture
def silent(tmp_path: Path) -> Iterator[Path]:
    """A socket that accepts and never answers (a monitor another client holds)."""
    path = tmp_path / "held.qmp"
    yield from (path for _ in _serve(path, lambda conn: None))


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "qemu.qmp"

    def handle(conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            talk(conn)

    def talk(conn: socket.socket) -> None:
        # Like QEMU: a JSON stream, not lines (clients need not send newlines).
        conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
        decoder, buf = json.JSONDecoder(), ""
        while data := conn.recv(4096):
            buf += data.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except json.JSONDecodeError:
                    break
                buf = buf.lstrip()[end:]
                ret: object = {}
                if msg["execute"] == "query-memory-size-summary":
                    ret = {"base-memory": 512 << 20}
                reply = {"return": ret, **({"id": msg["id"]} if "id" in msg else {})}
                conn.sendall(json.dumps(reply).encode() + b"\r\n")

    yield from (path for _ in _serve(path, handle))


def test_a_held_monitor_is_a_clear_error_not_a_hang(silent: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(PyksmError, match="another client") as e:
        qmp.query(str(silent), timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert e.value.hint and "-qmp" in e.value.hint


def test_a_missing_socket_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(PyksmError, match="No such file"):
        qmp.query(str(tmp_path / "none.qmp"), timeout=0.5)


def test_pid_and_ram_of_the_qemu_behind_the_socket(fake_qemu: Path) -> None:
    q = qmp.query(str(fake_qemu), timeout=5)
    assert q == qmp.QemuRam(os.getpid(), 512 << 20)


def test_collect_on_a_held_monitor_is_one_line(silent: Path, tmp_path: Path) -> None:
    from tests.unit.test_bad_input import run_case

    res = run_case(
        ["collect", "--qmp", str(silent), "--record", str(tmp_path / "t")], str(tmp_path)
    )
    assert res.code == 2, res.err
    assert len(res.err.splitlines()) == 1 and "another client" in res.err

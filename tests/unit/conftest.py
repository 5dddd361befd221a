"""Fixtures shared by the unit tests: fake QMP sockets (pyksm.collect.qmp), and the
experiment runner in-process with a fake KSM sysfs and no disk image."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
        conn.close()  # the client hung up: no fd of this connection is left

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
                elif msg["execute"] == "query-blockstats":
                    ret = [{"device": "virtio0", "stats": {"rd_bytes": 7 << 20, "wr_bytes": 0}}]
                reply = {"return": ret, **({"id": msg["id"]} if "id" in msg else {})}
                conn.sendall(json.dumps(reply).encode() + b"\r\n")

    yield from (path for _ in _serve(path, handle))


@pytest.fixture
def runner_on_fake_ksm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyksm.experiment.runner runs here: its Ksm is a sysfs directory under
    tmp_path/ksm (ksmd stopped, 100 pages / 20 ms) and it builds no disk image."""
    from pyksm.experiment import runner
    from pyksm.kernel import ksm

    root = tmp_path / "ksm"
    root.mkdir()
    for name, value in (("run", 0), ("pages_to_scan", 100), ("sleep_millisecs", 20)):
        (root / name).write_text(f"{value}\n")
    fake = ksm.Ksm(root)
    monkeypatch.setattr(runner.ksm, "Ksm", lambda: fake)
    monkeypatch.setattr(runner, "make_image", lambda path, mib: None)

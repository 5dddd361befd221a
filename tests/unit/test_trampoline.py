"""The BPF trampoline check (pyksm.probes.trampoline): BTF function ids from a
synthetic blob, and the bpf(2) load/attach attempt against a fake syscall.
No root and no working trampolines needed."""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from pyksm.probes import trampoline
from pyksm.probes.trampoline import BtfError

VFS = ("vfs_read", "vfs_readv", "aio_read", "filemap_read")


def _btf(types: list[tuple[str, int, int, bytes]], names: list[str]) -> bytes:
    """A BTF blob: ``types`` are (name, kind, vlen, extra bytes after btf_type)."""
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in names)

    def off(name: str) -> int:
        return 0 if not name else strings.index(b"\0" + name.encode() + b"\0") + 1

    body = b"".join(
        struct.pack("<III", off(name), (kind << 24) | vlen, 0) + extra
        for name, kind, vlen, extra in types
    )
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


# ids from 1: an INT, PTR, STRUCT (2 members), FUNC_PROTO (2 params), FUNC vfs_read,
# ENUM (3), ARRAY, FUNC filemap_read, a VAR named vfs_readv (not a function),
# DATASEC (1), DECL_TAG, ENUM64 (1), FUNC aio_read.
TYPES = [
    ("int", 1, 0, bytes(4)),
    ("", 2, 0, b""),
    ("s", 4, 2, bytes(24)),
    ("", 13, 2, bytes(16)),
    ("vfs_read", 12, 1, b""),
    ("e", 6, 3, bytes(24)),
    ("", 3, 0, bytes(12)),
    ("filemap_read", 12, 0, b""),
    ("vfs_readv", 14, 0, bytes(4)),
    (".data", 15, 1, bytes(12)),
    ("t", 17, 0, bytes(4)),
    ("e64", 19, 1, bytes(12)),
    ("aio_read", 12, 1, b""),
]
# "my_vfs_read" first: a name is matched whole, never as another's suffix
NAMES = ["my_vfs_read", "int", "s", "vfs_read", "e", "filemap_read", "vfs_readv", ".data"]
NAMES += ["t", "e64", "aio_read"]


def test_btf_function_ids_walks_every_kind(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_btf(TYPES, NAMES))
    assert trampoline.btf_function_ids(VFS, path) == {
        "vfs_read": 5,
        "filemap_read": 8,
        "aio_read": 13,
    }
    assert trampoline.btf_function_ids(("do_nothing",), path) == {}


def test_btf_errors(tmp_path: Path) -> None:
    with pytest.raises(BtfError, match="No such file"):
        trampoline.btf_function_ids(VFS, tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(BtfError, match="not BTF"):
        trampoline.btf_function_ids(VFS, bad)
    cut = tmp_path / "cut"
    cut.write_bytes(_btf(TYPES, NAMES)[:60])
    with pytest.raises(BtfError, match="past the end"):
        trampoline.btf_function_ids(VFS, cut)


@pytest.mark.skipif(not trampoline.VMLINUX_BTF.exists(), reason="no kernel BTF here")
def test_this_kernels_btf_names_the_vfs_functions() -> None:
    ids = trampoline.btf_function_ids(("vfs_read", "filemap_read"))
    assert set(ids) == {"vfs_read", "filemap_read"} and all(i > 0 for i in ids.values())


class FakeBpf:
    """bpf(2) stand-in: records the attrs, answers from ``results`` per command."""

    def __init__(self, results: dict[int, int]) -> None:
        self.results = results  # cmd -> errno (0: success)
        self.calls: list[tuple[int, bytes]] = []
        self.fds: list[int] = []

    def __call__(self, cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
        self.calls.append((cmd, attr.raw))
        err = self.results.get(cmd, 0)
        if err:
            return -1, err
        fd = os.open(os.devnull, os.O_RDONLY)
        self.fds.append(fd)
        return fd, 0

    def all_closed(self) -> bool:
        def is_open(fd: int) -> bool:
            try:
                os.fstat(fd)
            except OSError:
                return False
            return True

        return not any(is_open(fd) for fd in self.fds)


def test_try_fexit_loads_an_fexit_program_for_the_btf_id_and_attaches_it() -> None:
    bpf = FakeBpf({})
    assert trampoline.try_fexit("vfs_read", 4242, bpf) is None
    (load_cmd, load), (attach_cmd, attach) = bpf.calls
    assert load_cmd == trampoline.BPF_PROG_LOAD
    prog_type, insn_cnt = struct.unpack_from("<II", load)
    assert (prog_type, insn_cnt) == (trampoline.BPF_PROG_TYPE_TRACING, 2)
    assert struct.unpack_from("<I", load, 68)[0] == trampoline.BPF_TRACE_FEXIT
    assert struct.unpack_from("<I", load, 108)[0] == 4242
    assert attach_cmd == trampoline.BPF_RAW_TRACEPOINT_OPEN
    assert struct.unpack_from("<QI", attach) == (0, bpf.fds[0])  # no name, the program
    assert bpf.all_closed()  # program and link closed: nothing stays attached


@pytest.mark.parametrize(
    ("results", "expect"),
    [
        (
            {trampoline.BPF_PROG_LOAD: errno.EPERM},
            "loading an fexit program for vfs_read failed (EPERM)",
        ),
        ({trampoline.BPF_PROG_LOAD: errno.EINVAL}, "failed (EINVAL)"),
        (
            {trampoline.BPF_RAW_TRACEPOINT_OPEN: 524},
            "attaching a trampoline to vfs_read failed (ENOTSUPP)",
        ),
        ({trampoline.BPF_RAW_TRACEPOINT_OPEN: errno.EBUSY}, "(EBUSY)"),
    ],
)
def test_try_fexit_says_why_it_failed(results: dict[int, int], expect: str) -> None:
    bpf = FakeBpf(results)
    why = trampoline.try_fexit("vfs_read", 1, bpf)
    assert why is not None and expect in why and "\n" not in why
    assert bpf.all_closed()


def test_check_tries_each_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(_btf(TYPES, NAMES))
    bpf = FakeBpf({})
    ok, why = trampoline.check(VFS, path, bpf)
    assert ok == ("vfs_read", "aio_read", "filemap_read")
    assert why == "vfs_readv is not a function in the kernel's BTF"
    assert len(bpf.calls) == 6  # load + attach for each of the three
    # a kernel that refuses the program: one attempt, its reason
    bpf = FakeBpf({trampoline.BPF_PROG_LOAD: errno.EPERM})
    ok, why = trampoline.check(VFS, path, bpf)
    assert ok == () and "EPERM" in why and len(bpf.calls) == 1
    # attach refused for one function only: the others still count
    attempts: list[str] = []

    def fake_try(name: str, btf_id: int, bpf: Any = None) -> str | None:
        attempts.append(name)
        return "attaching a trampoline to aio_read failed (EBUSY)" if name == "aio_read" else None

    monkeypatch.setattr(trampoline, "try_fexit", fake_try)
    ok, why = trampoline.check(VFS, path)
    assert ok == ("vfs_read", "filemap_read") and why.startswith("vfs_readv")  # the first
    ok, why = trampoline.check(("filemap_read", "aio_read"), path)
    assert ok == ("filemap_read",) and "aio_read failed (EBUSY)" in why
    assert attempts == ["vfs_read", "aio_read", "filemap_read", "filemap_read", "aio_read"]


def test_check_without_btf(tmp_path: Path) -> None:
    ok, why = trampoline.check(VFS, tmp_path / "none", FakeBpf({}))
    assert ok == () and "no kernel BTF" in why and "CONFIG_DEBUG_INFO_BTF" in why


def test_recursion_misses_reads_prog_info() -> None:
    seen: list[bytes] = []

    def bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
        assert cmd == trampoline.BPF_OBJ_GET_INFO_BY_FD
        seen.append(attr.raw)
        fd, size, addr = struct.unpack_from("<IIQ", attr.raw)
        assert (fd, size) == (7, trampoline.PROG_INFO_SIZE)
        ctypes.memmove(addr + trampoline.PROG_INFO_RECURSION_MISSES, struct.pack("<Q", 3), 8)
        return 0, 0

    assert trampoline.recursion_misses(7, bpf) == 3
    assert trampoline.recursion_misses(7, lambda cmd, attr: (-1, errno.EBADF)) == 0

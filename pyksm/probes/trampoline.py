"""Do BPF trampolines (fentry/fexit) work here? Asked of the kernel, not guessed.

A BPF trampoline attaches a tracing program to a kernel function through
ftrace's direct calls: far cheaper per call than a kprobe + kretprobe, and
an fexit program sees the arguments and the return value together. It needs
the kernel's BTF (``/sys/kernel/btf/vmlinux``, CONFIG_DEBUG_INFO_BTF) to
name the function, a JIT, DYNAMIC_FTRACE_WITH_DIRECT_CALLS, and a kernel
that lets tracing programs load and attach: this development machine's 6.18
has BTF but refuses them with EPERM; our test kernel accepts them.

bcc's own check (``BPF.support_kfunc()``: BTF plus the symbol
``bpf_trampoline_link_prog``) says yes on both, so ``check`` tries the real
thing instead: for each function, load a two-instruction fexit program
(``return 0``) with the function's BTF id and attach it (a BPF link), then
close both, which detaches it. No compiler, no bcc: a few bpf(2) calls.

- ``btf_function_ids``: BTF ids of named functions (``BTF_KIND_FUNC``),
  read from the raw BTF blob;
- ``try_fexit``: one load + attach attempt; None, or why it failed;
- ``check``: which of the names a trampoline attaches to, and the first
  reason one did not;
- ``recursion_misses``: how often a loaded program was skipped because it
  was already running on that CPU (``bpf_prog_info.recursion_misses``).

What can fail: no BTF, not root (EPERM), a locked-down kernel (EPERM), a
function missing from BTF or not traceable (inlined, notrace). Each is
reported as a reason string, never raised.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["VMLINUX_BTF", "btf_function_ids", "check", "recursion_misses", "try_fexit"]

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

# include/uapi/linux/btf.h
BTF_MAGIC = 0xEB9F
_BTF_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len
_BTF_TYPE = struct.Struct("<III")  # name_off, info, size/type
BTF_KIND_FUNC = 12
# Bytes after the 12-byte btf_type: fixed per kind, or per member (times vlen).
_KIND_EXTRA = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_KIND_PER_VLEN = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM,
#                                                   FUNC_PROTO, DATASEC, ENUM64

# include/uapi/linux/bpf.h (offsets checked against Debian's linux-libc-dev)
SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD = 5
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17  # with a tracing program: attach, returns a link fd
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FEXIT = 25
ATTR_SIZE = 144  # enough for every field we set; the kernel wants the rest zero
PROG_INFO_SIZE = 232
PROG_INFO_RECURSION_MISSES = 208
# r0 = 0; exit
RETURN_ZERO = struct.pack("<BBhiBBhi", 0xB7, 0, 0, 0, 0x95, 0, 0, 0)
ENOTSUPP = 524  # kernel-internal, no name in errno


class BtfError(Exception):
    pass


def btf_function_ids(names: Iterable[str], path: Path = VMLINUX_BTF) -> dict[str, int]:
    """BTF type ids of the functions among ``names`` that ``path`` describes.

    Walks the type section once (about 130 000 types in a distribution
    kernel: 0.1 s here, 0.5 s under TCG). Raises BtfError for a missing or
    malformed file.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BtfError(f"{path}: {e.strerror}") from None
    if len(data) < _BTF_HEADER.size:
        raise BtfError(f"{path}: too short for BTF")
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _BTF_HEADER.unpack_from(
        data
    )
    if magic != BTF_MAGIC:
        raise BtfError(f"{path}: not BTF (magic {magic:#x})")
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    # Strings are deduplicated: each name has one offset (or none).
    wanted: dict[int, str] = {}
    for name in names:
        at = strings.find(b"\0" + name.encode() + b"\0")
        if at >= 0:
            wanted[at + 1] = name
    found: dict[str, int] = {}
    off, end = hdr_len + type_off, hdr_len + type_off + type_len
    if end > len(data):
        raise BtfError(f"{path}: type section runs past the end")
    unpack = _BTF_TYPE.unpack_from
    type_id = 1
    while off + _BTF_TYPE.size <= end and len(found) < len(wanted):
        name_off, info, _ = unpack(data, off)
        kind = (info >> 24) & 0x1F
        if kind == BTF_KIND_FUNC and name_off in wanted:
            found[wanted[name_off]] = type_id
        off += (
            _BTF_TYPE.size
            + _KIND_EXTRA.get(kind, 0)
            + _KIND_PER_VLEN.get(kind, 0) * (info & 0xFFFF)
        )
        type_id += 1
    return found


Syscall = Callable[[int, ctypes.Array[ctypes.c_char]], tuple[int, int]]


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> tuple[int, int]:
    """bpf(2): (result, errno)."""
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        return -1, errno.ENOSYS
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = int(libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    return ret, ctypes.get_errno() if ret < 0 else 0


def _errname(err: int) -> str:
    if err == ENOTSUPP:
        return "ENOTSUPP"
    return errno.errorcode.get(err, f"errno {err}")


def try_fexit(name: str, btf_id: int, bpf: Syscall = _bpf) -> str | None:
    """Load and attach an empty fexit program to ``name``; None if it worked, else why not."""
    insns = ctypes.create_string_buffer(RETURN_ZERO, len(RETURN_ZERO))
    license = ctypes.create_string_buffer(b"GPL")
    raw = bytearray(ATTR_SIZE)
    struct.pack_into(
        "<IIQQ",
        raw,
        0,
        BPF_PROG_TYPE_TRACING,
        2,
        ctypes.addressof(insns),
        ctypes.addressof(license),
    )
    struct.pack_into("<I", raw, 68, BPF_TRACE_FEXIT)  # expected_attach_type
    struct.pack_into("<I", raw, 108, btf_id)  # attach_btf_id
    prog, err = bpf(BPF_PROG_LOAD, ctypes.create_string_buffer(bytes(raw), ATTR_SIZE))
    if prog < 0:
        why = f"loading an fexit program for {name} failed ({_errname(err)})"
        if err == errno.EPERM:
            why += ": not root" if os.geteuid() != 0 else ": the kernel refuses tracing programs"
        return why
    try:
        raw = bytearray(ATTR_SIZE)
        struct.pack_into("<QI", raw, 0, 0, prog)  # name = NULL, prog_fd
        link, err = bpf(BPF_RAW_TRACEPOINT_OPEN, ctypes.create_string_buffer(bytes(raw), ATTR_SIZE))
        if link < 0:
            return f"attaching a trampoline to {name} failed ({_errname(err)})"
        os.close(link)
        return None
    finally:
        os.close(prog)


def check(
    names: Iterable[str], path: Path = VMLINUX_BTF, bpf: Syscall = _bpf
) -> tuple[tuple[str, ...], str]:
    """``(names a trampoline attached to, in order; the first reason one did not)``.

    The reason is "" when all attached. A kernel that refuses tracing
    programs outright fails on the first function; the rest are not tried.
    """
    names = tuple(names)
    if not path.exists():
        return (), f"no kernel BTF ({path}; CONFIG_DEBUG_INFO_BTF)"
    try:
        ids = btf_function_ids(names, path)
    except BtfError as e:
        return (), str(e)
    ok: list[str] = []
    reason = ""
    for name in names:
        if name not in ids:
            reason = reason or f"{name} is not a function in the kernel's BTF"
            continue
        why = try_fexit(name, ids[name], bpf)
        if why is None:
            ok.append(name)
            continue
        reason = reason or why
        if why.startswith("loading"):  # the program itself is refused: so are all
            break
    return tuple(ok), reason


def recursion_misses(prog_fd: int, bpf: Syscall = _bpf) -> int:
    """Runs of a loaded program skipped because it was already running on that CPU."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    raw = bytearray(ATTR_SIZE)
    struct.pack_into("<IIQ", raw, 0, prog_fd, PROG_INFO_SIZE, ctypes.addressof(info))
    ret, _ = bpf(BPF_OBJ_GET_INFO_BY_FD, ctypes.create_string_buffer(bytes(raw), ATTR_SIZE))
    if ret < 0:
        return 0
    return int(struct.unpack_from("<Q", info.raw, PROG_INFO_RECURSION_MISSES)[0])

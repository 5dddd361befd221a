"""numpy on arrays that end just before an unmapped page (run in the test VM).

numpy's AVX2 loops load an array's tail with masked loads; a masked-off lane
may lie in the next page. Hardware does not fault on it; QEMU 7.2's TCG does,
so under TCG the lab runs numpy with its AVX2 and AVX-512 loops disabled
(pyksm.lab.vm.TCG_NUMPY_ENV). Prints the dispatch numpy uses, then OK when
every operation on every tail length ran; a fault kills the process (SIGSEGV).
"""

from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np

PAGE = mmap.PAGESIZE


def page_before_a_hole() -> int:
    """The address of a mapped page whose next page is unmapped."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
    ]  # fmt: skip
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    addr = libc.mmap(None, 2 * PAGE, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    if libc.munmap(addr + PAGE, PAGE) != 0:
        raise OSError(ctypes.get_errno(), "munmap")
    return int(addr)


def main() -> None:
    print("NPY_DISABLE_CPU_FEATURES:", os.environ.get("NPY_DISABLE_CPU_FEATURES", "(unset)"))
    buf = (ctypes.c_char * PAGE).from_address(page_before_a_hole())
    for dtype in (np.float64, np.int64, np.uint64, np.float32, np.int32, np.uint8):
        size = np.dtype(dtype).itemsize
        for n in range(1, 40):
            a = np.frombuffer(buf, dtype=dtype, count=n, offset=PAGE - n * size)
            (a + 1, a == 3, a.sum(), np.maximum(a, 2), a.max(), np.sort(a), np.unique(a))
    print("OK", flush=True)


if __name__ == "__main__":
    main()

"""64-bit page hashes, compiled with numba, and zero-page detection.

The hash is pyksm's own design in the XXH3 family: eight 64-bit accumulators take
one 64-byte stripe at a time; each lane is mixed with a per-stripe key word and
folded in with a 32x32->64 multiply (the step that SIMD units do eight at a time),
the raw lane is added to the neighbouring accumulator so no input bit is lost, the
accumulators are scrambled every 2 KiB, and the end folds them pairwise through
64x64->128 multiplies and an avalanche. It is not XXH3 and does not produce XXH3
values; it is for equality of pages inside pyksm, where 64 bits make a collision
among a few million pages (probability ~1e-7) negligible.

Pages whose 4096 bytes are all zero are reported separately (``zero`` flag), since
KSM treats them apart (``use_zero_pages``) and the oracle counts them on their own.

What can fail: input whose length is not a multiple of the page size raises
:class:`pyksm.errors.PyksmError`.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numba
import numpy as np
import numpy.typing as npt

from pyksm.errors import PyksmError

__all__ = ["PAGE_SIZE", "ZERO_HASH", "hash_bytes", "hash_file", "hash_pages"]

PAGE_SIZE = 4096
LANES = PAGE_SIZE // 8  # uint64 words per page
STRIPES = LANES // 8  # 64-byte stripes per page

U64 = npt.NDArray[np.uint64]
U8 = npt.NDArray[np.uint8]


def _key_table(n: int, seed: int) -> U64:
    """n key words from a splitmix64 sequence (fixed seed: hashes are stable)."""
    out = np.empty(n, dtype=np.uint64)
    x = seed
    mask = (1 << 64) - 1
    for i in range(n):
        x = (x + 0x9E3779B97F4A7C15) & mask
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out[i] = z ^ (z >> 31)
    return out


KEYS = _key_table(STRIPES + 8 + 16, 0x70796B736D)  # "pyksm"


@numba.njit(inline="always", cache=True)
def _fold128(a: np.uint64, b: np.uint64) -> np.uint64:
    """Low 64 bits XOR high 64 bits of the 128-bit product a*b."""
    m = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    alo = a & m
    ahi = a >> s32
    blo = b & m
    bhi = b >> s32
    ll = alo * blo
    lh = alo * bhi
    hl = ahi * blo
    hh = ahi * bhi
    cross = (ll >> s32) + (lh & m) + hl
    hi = hh + (lh >> s32) + (cross >> s32)
    lo = (cross << s32) | (ll & m)
    return lo ^ hi


@numba.njit(cache=True, nogil=True)
def _hash_one(words: U64, base: int, keys: U64) -> tuple[np.uint64, bool]:
    m = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    s47 = np.uint64(47)
    p32 = np.uint64(0x9E3779B1)
    a0 = np.uint64(0x3C6EF372FE94F82B)
    a1 = np.uint64(0x9E3779B185EBCA87)
    a2 = np.uint64(0xC2B2AE3D27D4EB4F)
    a3 = np.uint64(0x165667B19E3779F9)
    a4 = np.uint64(0x85EBCA77C2B2AE63)
    a5 = np.uint64(0x27D4EB2F165667C5)
    a6 = np.uint64(0x61C8864E7A143579)
    a7 = np.uint64(0xFF51AFD7ED558CCD)
    orv = np.uint64(0)
    for blk in range(2):
        for s in range(32):
            st = blk * 32 + s
            o = base + st * 8
            d0 = words[o]
            d1 = words[o + 1]
            d2 = words[o + 2]
            d3 = words[o + 3]
            d4 = words[o + 4]
            d5 = words[o + 5]
            d6 = words[o + 6]
            d7 = words[o + 7]
            orv |= (d0 | d1) | (d2 | d3) | (d4 | d5) | (d6 | d7)
            k0 = d0 ^ keys[st]
            k1 = d1 ^ keys[st + 1]
            k2 = d2 ^ keys[st + 2]
            k3 = d3 ^ keys[st + 3]
            k4 = d4 ^ keys[st + 4]
            k5 = d5 ^ keys[st + 5]
            k6 = d6 ^ keys[st + 6]
            k7 = d7 ^ keys[st + 7]
            a0 += d1 + (k0 & m) * (k0 >> s32)
            a1 += d0 + (k1 & m) * (k1 >> s32)
            a2 += d3 + (k2 & m) * (k2 >> s32)
            a3 += d2 + (k3 & m) * (k3 >> s32)
            a4 += d5 + (k4 & m) * (k4 >> s32)
            a5 += d4 + (k5 & m) * (k5 >> s32)
            a6 += d7 + (k6 & m) * (k6 >> s32)
            a7 += d6 + (k7 & m) * (k7 >> s32)
        # scramble
        kb = 72 + blk
        a0 = ((a0 ^ (a0 >> s47)) ^ keys[kb]) * p32
        a1 = ((a1 ^ (a1 >> s47)) ^ keys[kb + 1]) * p32
        a2 = ((a2 ^ (a2 >> s47)) ^ keys[kb + 2]) * p32
        a3 = ((a3 ^ (a3 >> s47)) ^ keys[kb + 3]) * p32
        a4 = ((a4 ^ (a4 >> s47)) ^ keys[kb + 4]) * p32
        a5 = ((a5 ^ (a5 >> s47)) ^ keys[kb + 5]) * p32
        a6 = ((a6 ^ (a6 >> s47)) ^ keys[kb + 6]) * p32
        a7 = ((a7 ^ (a7 >> s47)) ^ keys[kb + 7]) * p32
    h = np.uint64(4096) * np.uint64(0x9E3779B185EBCA87)
    h += _fold128(a0 ^ keys[76], a1 ^ keys[77])
    h += _fold128(a2 ^ keys[78], a3 ^ keys[79])
    h += _fold128(a4 ^ keys[80], a5 ^ keys[81])
    h += _fold128(a6 ^ keys[82], a7 ^ keys[83])
    h ^= h >> np.uint64(37)
    h *= np.uint64(0x165667919E3779F9)
    h ^= h >> s32
    return h, orv == np.uint64(0)


@numba.njit(cache=True, nogil=True)
def _hash_range(words: U64, first: int, count: int, keys: U64, out: U64, zero: U8) -> None:
    for p in range(count):
        h, z = _hash_one(words, (first + p) * 512, keys)
        out[first + p] = h
        zero[first + p] = 1 if z else 0


@numba.njit(cache=True, nogil=True, parallel=True)
def _hash_parallel(words: U64, npages: int, keys: U64, out: U64, zero: U8) -> None:
    chunk = 256
    nchunks = (npages + chunk - 1) // chunk
    for c in numba.prange(nchunks):
        first = c * chunk
        count = min(chunk, npages - first)
        _hash_range(words, first, count, keys, out, zero)


def _as_words(data: npt.NDArray[np.generic] | bytes | bytearray | memoryview) -> U64:
    arr = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if arr.dtype != np.uint64:
        arr = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        if arr.size % PAGE_SIZE:
            raise PyksmError(f"{arr.size} bytes is not a whole number of {PAGE_SIZE}-byte pages")
        arr = arr.view(np.uint64)
    elif arr.size % LANES:
        raise PyksmError(f"{arr.size * 8} bytes is not a whole number of {PAGE_SIZE}-byte pages")
    return np.ascontiguousarray(arr).reshape(-1)


def hash_pages(
    data: npt.NDArray[np.generic] | bytes | bytearray | memoryview, parallel: bool = False
) -> tuple[U64, npt.NDArray[np.bool_]]:
    """(hash per page, all-zero per page) of whole pages in ``data``."""
    words = _as_words(data)
    n = words.size // LANES
    out = np.empty(n, dtype=np.uint64)
    zero = np.empty(n, dtype=np.uint8)
    if parallel and n >= 1024:
        _hash_parallel(words, n, KEYS, out, zero)
    else:
        _hash_range(words, 0, n, KEYS, out, zero)
    return out, zero.view(np.bool_)


def hash_bytes(page: bytes) -> int:
    """Hash of a single page (convenience for tests and tools)."""
    h, _ = hash_pages(page)
    if h.size != 1:
        raise PyksmError(f"expected one {PAGE_SIZE}-byte page, got {len(page)} bytes")
    return int(h[0])


def hash_file(path: Path) -> tuple[U64, npt.NDArray[np.bool_]]:
    """Hash a file page by page, through a populated read-only mapping, on all cores.

    A trailing partial page is zero-padded (as the page cache holds it).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise PyksmError(f"cannot read {path}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        whole = size // PAGE_SIZE
        hashes: list[U64] = []
        zeros: list[npt.NDArray[np.bool_]] = []
        if whole:
            # MAP_POPULATE: the kernel maps every page in one go (no fault per 64 KiB)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            with mmap.mmap(fd, whole * PAGE_SIZE, flags=flags, prot=mmap.PROT_READ) as m:
                arr = np.frombuffer(m, dtype=np.uint64)
                h, z = hash_pages(arr, parallel=True)
                del arr
            hashes.append(h)
            zeros.append(z)
        if size % PAGE_SIZE:
            tail = bytearray(PAGE_SIZE)
            data = os.pread(fd, size % PAGE_SIZE, whole * PAGE_SIZE)
            tail[: len(data)] = data
            h, z = hash_pages(tail)
            hashes.append(h)
            zeros.append(z)
    except OSError as e:
        raise PyksmError(f"cannot read {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if not hashes:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.bool_)
    return np.concatenate(hashes), np.concatenate(zeros)


def _zero_hash() -> int:
    h, _ = hash_pages(np.zeros(LANES, dtype=np.uint64))
    return int(h[0])


ZERO_HASH = _zero_hash()
"""The hash of an all-zero page."""

"""Pure logic of the hint intakes (the kernel side is tested in tests/vm)."""

from __future__ import annotations

import ctypes

import pytest

from pyksm.errors import PyksmError
from pyksm.kernel import hints

P = hints.PAGE


@pytest.mark.parametrize(
    ("start", "length", "want"),
    [
        (0, 1, (0, P)),
        (P, P, (P, P)),
        (P + 1, 1, (P, P)),
        (P - 1, 2, (0, 2 * P)),
        (3 * P + 100, 2 * P, (3 * P, 3 * P)),
    ],
)
def test_page_range_widens_to_page_bounds(start: int, length: int, want: tuple[int, int]) -> None:
    assert hints.page_range(start, length) == want


def test_unknown_intake_is_refused() -> None:
    with pytest.raises(PyksmError, match="unknown intake 'ioctl'"):
        hints.open_intake("ioctl")


def test_madvise_writer_refuses_a_kernel_without_the_advice() -> None:
    if hints.madvise_supported():
        pytest.skip("this kernel has MADV_KSM_HINT")
    with pytest.raises(PyksmError, match="no MADV_KSM_HINT"):
        hints.MadviseWriter()


def test_iovecs_hold_each_range_in_order() -> None:
    ranges = [(0x1000, 0x2000), (1 << 46, 4096), (0x7FFF_FFFF_F000, 0x1000)]
    iov = hints.iovecs(ranges)
    assert len(iov) == 3
    assert [(v.iov_base, v.iov_len) for v in iov] == ranges
    assert ctypes.sizeof(iov) == 16 * len(ranges)  # struct iovec on LP64

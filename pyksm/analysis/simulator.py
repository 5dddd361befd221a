"""Trace-driven KSM scanner simulator: snapshots + hints -> pages_sharing over time.

Memory is what the snapshot series says: a site (pid, page) holds the content of
the latest snapshot at or before the simulated time, or is absent. ksmd wakes
every ``sleep_ms`` and takes ``pages_to_scan`` steps (batches are instantaneous).

Each step visits one present page the way 6.12's ``cmp_and_merge_page`` does:

1. a site merged earlier whose content changed (COW break) or vanished leaves
   its stable node (lazily, at its next visit, as ksmd does);
2. stable tree: a content that has a KSM page merges at once;
3. volatility check: a page whose content differs from its last visit's (every
   page on its first visit) only records the new checksum;
4. unstable tree (reset every full round): a second page of the same content,
   whose first page still holds it, merges both into a new KSM page.

Orders: ``linear`` (sites by pid, then address: ksmd's mm/VMA walk) or
``random`` (a fresh permutation each round). ``smart_scan`` skips non-KSM pages
that keep failing, as 6.7+ does (age 3+: skip 1, 2, 4, then 8 rounds; skipped
and absent pages cost no budget). KSM++ hints: a bounded circular stack of
``hint_capacity`` records (newest on top, the oldest overwritten when full,
those older than ``hint_max_age_ms`` dropped at pop); steps alternate
``interleave = (H, L)``; a hint step visits the next present page of the
current hint (up to 8 hints tried, else a linear step), resets the page's smart
scan age and, with ``hint_skip_volatility``, skips the volatility check.

``pages_sharing`` and ``pages_shared`` follow the kernel's accounting including
``max_page_sharing`` chains. :func:`simulate` returns them sampled at every
snapshot time (the state when that snapshot was taken).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from pyksm.analysis.hinttrace import HintTrace
from pyksm.analysis.series import SnapshotSeries
from pyksm.errors import PyksmError

__all__ = ["ScanParams", "SimInput", "SimResult", "simulate", "sweep"]

HINT_TRIES = 8
ORDERS = ("linear", "random")
# counters returned by the kernel loop
C_VISITS, C_LINEAR, C_HINTED, C_MERGES, C_SKIPPED, C_AGED, C_OVERFLOW, C_VOLATILE = range(8)
COUNTERS = (
    "visits",
    "linear_visits",
    "hint_visits",
    "merges",
    "skipped",
    "hints_dropped_age",
    "hints_dropped_overflow",
    "volatile",
)


# hint_interleave's bound in the KSM++ series: H <= 16 L, L >= 1.
MAX_HINT_RATIO = 16


@dataclass(frozen=True)
class ScanParams:
    pages_to_scan: int = 100
    sleep_ms: float = 20.0
    order: str = "linear"
    smart_scan: bool = False
    hint_capacity: int = 0  # 0: no hints (plain KSM)
    interleave: tuple[int, int] = (1, 1)
    hint_max_age_ms: float = 120000.0
    hint_skip_volatility: bool = True
    max_page_sharing: int = 256
    start: float | None = None  # ksmd starts (default: first snapshot)
    seed: int = 1

    def check(self) -> None:
        if self.order not in ORDERS:
            raise PyksmError(f"unknown scan order {self.order!r}: one of {', '.join(ORDERS)}")
        if self.pages_to_scan <= 0 or self.sleep_ms <= 0:
            raise PyksmError("pages_to_scan and sleep_ms must be positive")
        if self.max_page_sharing < 2:
            raise PyksmError("max_page_sharing must be at least 2")
        if min(self.interleave) < 0 or self.hint_capacity < 0:
            raise PyksmError("interleave and hint_capacity must not be negative")
        hint, linear = self.interleave
        # As the kernel's hint_interleave: the linear scan keeps a share.
        if linear < 1 or hint > MAX_HINT_RATIO * linear:
            raise PyksmError(
                f"interleave {hint}:{linear}: L must be at least 1 and H at most "
                f"{MAX_HINT_RATIO} x L (the kernel refuses it)"
            )


@dataclass
class SimInput:
    """The series reduced to what the scanner sees."""

    times: npt.NDArray[np.float64]  # T
    content: npt.NDArray[np.int32]  # (T, S) content id per site, -1 absent
    sites: npt.NDArray[np.uint64]  # S, in linear scan order
    hint_time: npt.NDArray[np.float64]
    hint_lo: npt.NDArray[np.int64]  # site index range [lo, hi)
    hint_hi: npt.NDArray[np.int64]

    @classmethod
    def from_series(cls, series: SnapshotSeries, hints: HintTrace | None = None) -> SimInput:
        if series.count == 0:
            raise PyksmError("the snapshot series is empty")
        all_sites = series.sites()
        sites, site_idx = np.unique(all_sites, return_inverse=True)
        _, cid = np.unique(series.hash, return_inverse=True)
        content = np.full((series.count, sites.size), -1, dtype=np.int32)
        content[series.snapshot_index(), site_idx] = cid.astype(np.int32)
        hints = hints or HintTrace.empty()
        lo, hi = hints.page_ranges()
        return cls(
            times=series.times.astype(np.float64),
            content=content,
            sites=sites,
            hint_time=hints.time.astype(np.float64),
            hint_lo=np.searchsorted(sites, lo).astype(np.int64),
            hint_hi=np.searchsorted(sites, hi).astype(np.int64),
        )


@dataclass
class SimResult:
    params: ScanParams
    times: npt.NDArray[np.float64]
    pages_sharing: npt.NDArray[np.int64]
    pages_shared: npt.NDArray[np.int64]
    counters: dict[str, int]

    def summary(self) -> dict[str, Any]:
        return {
            "params": asdict(self.params),
            "final_pages_sharing": int(self.pages_sharing[-1]) if self.times.size else 0,
            "mean_pages_sharing": float(self.pages_sharing.mean()) if self.times.size else 0.0,
            **self.counters,
        }


@numba.njit(cache=True)
def _ref(n: int, mps: int) -> tuple[int, int]:
    """(pages_shared, pages_sharing) of a stable node with n sharers."""
    if n <= 0:
        return 0, 0
    shared = (n + mps - 1) // mps
    return shared, n - shared


@numba.njit(cache=True)
def _drop_sharer(stable: npt.NDArray[np.int64], m: int, mps: int) -> tuple[int, int]:
    """A page left stable node m (copy-on-write broke it): the change of
    (pages_shared, pages_sharing)."""
    sh0, sg0 = _ref(stable[m], mps)
    stable[m] -= 1
    sh1, sg1 = _ref(stable[m], mps)
    return sh1 - sh0, sg1 - sg0


@numba.njit(cache=True)
def _run(
    content: npt.NDArray[np.int32],
    times: npt.NDArray[np.float64],
    ncontent: int,
    start: float,
    pages_to_scan: int,
    dt: float,
    random_order: bool,
    smart: bool,
    cap: int,
    ih: int,
    il: int,
    max_age: float,
    skip_vol: bool,
    mps: int,
    hint_time: npt.NDArray[np.float64],
    hint_lo: npt.NDArray[np.int64],
    hint_hi: npt.NDArray[np.int64],
    seed: int,
    rate: npt.NDArray[np.float64],
    out_sharing: npt.NDArray[np.int64],
    out_shared: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
) -> None:
    T = content.shape[0]
    S = content.shape[1]
    np.random.seed(seed)
    order = np.arange(S)
    if random_order:
        np.random.shuffle(order)
    merged = np.full(S, -1, dtype=np.int32)
    checksum = np.full(S, -1, dtype=np.int32)
    age = np.zeros(S, dtype=np.int32)
    skips = np.zeros(S, dtype=np.int32)
    stable = np.zeros(ncontent, dtype=np.int64)
    unstable_site = np.full(ncontent, -1, dtype=np.int64)
    unstable_round = np.full(ncontent, -1, dtype=np.int64)
    shared_total = 0
    sharing_total = 0
    # hint stack (circular, newest on top)
    cap1 = max(cap, 1)
    st_time = np.zeros(cap1, dtype=np.float64)
    st_lo = np.zeros(cap1, dtype=np.int64)
    st_hi = np.zeros(cap1, dtype=np.int64)
    st_top = 0
    st_count = 0
    cur_active = False
    cur_lo = 0
    cur_hi = 0
    next_hint = 0
    step_no = 0
    pos = 0
    rnd = 0
    t = 0
    tau = start
    sample = 0
    while sample < T and times[sample] <= tau:
        out_sharing[sample] = 0
        out_shared[sample] = 0
        sample += 1
    end = times[T - 1]
    carry = 0.0
    while sample < T:
        while t + 1 < T and times[t + 1] <= tau:
            t += 1
        if cap > 0:
            while next_hint < hint_time.size and hint_time[next_hint] <= tau:
                if st_count == cap:
                    counters[6] += 1
                else:
                    st_count += 1
                st_time[st_top] = hint_time[next_hint]
                st_lo[st_top] = hint_lo[next_hint]
                st_hi[st_top] = hint_hi[next_hint]
                st_top = (st_top + 1) % cap
                next_hint += 1
        budget = pages_to_scan
        if rate.size and rate[t] >= 0:
            carry += rate[t] * dt
            budget = int(carry)
            carry -= budget
        while budget > 0:
            s = -1
            hinted = False
            # --- hint step?
            if cap > 0 and ih > 0:
                take = True
                if il > 0:
                    if step_no >= ih + il:
                        step_no = 0
                    take = step_no < ih
                    step_no += 1
                if take:
                    tries = 0
                    while tries < HINT_TRIES and s < 0:
                        if not cur_active:
                            # expire from the bottom, then pop the top
                            while st_count > 0:
                                b = (st_top - st_count + cap) % cap
                                if max_age > 0 and tau - st_time[b] > max_age:
                                    st_count -= 1
                                    counters[5] += 1
                                else:
                                    break
                            if st_count == 0:
                                break
                            st_top = (st_top - 1 + cap) % cap
                            st_count -= 1
                            cur_lo = st_lo[st_top]
                            cur_hi = st_hi[st_top]
                            cur_active = True
                        while cur_lo < cur_hi and content[t, cur_lo] < 0:
                            cur_lo += 1
                        if cur_lo < cur_hi:
                            s = cur_lo
                            cur_lo += 1
                            if cur_lo >= cur_hi:
                                cur_active = False
                        else:
                            cur_active = False
                            tries += 1
                    if s >= 0:
                        hinted = True
                        age[s] = 0
                        skips[s] = 0
            # --- linear step
            if s < 0:
                while s < 0:
                    if pos >= S:
                        # end of a full scan: ksmd's batch ends here too
                        pos = 0
                        rnd += 1
                        if random_order:
                            np.random.shuffle(order)
                        break
                    x = order[pos]
                    pos += 1
                    c = content[t, x]
                    m = merged[x]
                    if m >= 0 and c != m:
                        d_shared, d_sharing = _drop_sharer(stable, m, mps)
                        shared_total += d_shared
                        sharing_total += d_sharing
                        merged[x] = -1
                        m = -1
                    if c < 0:
                        continue
                    if smart and m < 0:
                        a = age[x]
                        if a < 255:
                            age[x] = a + 1
                        if a >= 3:
                            if skips[x] == 0:
                                if a <= 3:
                                    skips[x] = 1
                                elif a <= 5:
                                    skips[x] = 2
                                elif a <= 8:
                                    skips[x] = 4
                                else:
                                    skips[x] = 8
                            else:
                                skips[x] -= 1
                                counters[4] += 1
                                continue
                    s = x
                if s < 0:
                    break  # the round ended
                counters[1] += 1
            else:
                counters[2] += 1
            # --- cmp_and_merge_page
            budget -= 1
            counters[0] += 1
            c = content[t, s]
            m = merged[s]
            if m >= 0 and c != m:
                d_shared, d_sharing = _drop_sharer(stable, m, mps)
                shared_total += d_shared
                sharing_total += d_sharing
                merged[s] = -1
                m = -1
            if m >= 0:
                continue
            if stable[c] > 0:
                sh0, sg0 = _ref(stable[c], mps)
                stable[c] += 1
                sh1, sg1 = _ref(stable[c], mps)
                shared_total += sh1 - sh0
                sharing_total += sg1 - sg0
                merged[s] = c
                counters[3] += 1
                continue
            if not (hinted and skip_vol) and checksum[s] != c:
                checksum[s] = c
                counters[7] += 1
                continue
            checksum[s] = c
            u = unstable_site[c]
            if unstable_round[c] == rnd and u != s and merged[u] < 0 and content[t, u] == c:
                sh0, sg0 = _ref(stable[c], mps)
                stable[c] += 2
                sh1, sg1 = _ref(stable[c], mps)
                shared_total += sh1 - sh0
                sharing_total += sg1 - sg0
                merged[s] = c
                merged[u] = c
                unstable_round[c] = -1
                counters[3] += 2
            else:
                unstable_site[c] = s
                unstable_round[c] = rnd
        tau += dt
        while sample < T and times[sample] <= tau:
            out_sharing[sample] = sharing_total
            out_shared[sample] = shared_total
            sample += 1
        if tau > end + dt:
            break
    while sample < T:
        out_sharing[sample] = sharing_total
        out_shared[sample] = shared_total
        sample += 1


def observed_rate(series: SnapshotSeries) -> npt.NDArray[np.float64]:
    """Pages ksmd scanned per second in each snapshot interval (6.8+ ``pages_scanned``).

    Driving the simulator with it (``simulate(..., rate=...)``) separates the
    scan-policy model from how much CPU ksmd actually got (e.g. under TCG).
    """
    scanned = [k.get("pages_scanned") for k in series.ksm]
    if len(scanned) != series.count or any(v is None for v in scanned) or series.count < 2:
        raise PyksmError(
            "the snapshots lack ksm/pages_scanned per snapshot (Linux 6.8+ and pyksm snapshot)"
        )
    s = np.asarray(scanned, dtype=np.float64)
    dt = np.diff(series.times)
    r = np.diff(s) / np.where(dt > 0, dt, 1.0)
    return np.append(r, r[-1])


def simulate(
    inp: SimInput, params: ScanParams, rate: npt.NDArray[np.float64] | None = None
) -> SimResult:
    """Run one scanner configuration over the input.

    ``rate``: pages scanned per second during each snapshot interval (length T),
    replacing pages_to_scan / sleep_ms (see :func:`observed_rate`).
    """
    params.check()
    if rate is not None and len(rate) != inp.times.size:
        raise PyksmError(f"rate has {len(rate)} values for {inp.times.size} snapshots")
    T = inp.times.size
    sharing = np.zeros(T, dtype=np.int64)
    shared = np.zeros(T, dtype=np.int64)
    counters = np.zeros(len(COUNTERS), dtype=np.int64)
    ncontent = int(inp.content.max()) + 1 if inp.content.size else 0
    start = float(inp.times[0]) if params.start is None else float(params.start)
    _run(
        inp.content,
        inp.times,
        max(ncontent, 1),
        start,
        int(params.pages_to_scan),
        float(params.sleep_ms) / 1000.0,
        params.order == "random",
        bool(params.smart_scan),
        int(params.hint_capacity),
        int(params.interleave[0]),
        int(params.interleave[1]),
        float(params.hint_max_age_ms) / 1000.0,
        bool(params.hint_skip_volatility),
        int(params.max_page_sharing),
        inp.hint_time,
        inp.hint_lo,
        inp.hint_hi,
        int(params.seed),
        np.empty(0) if rate is None else np.asarray(rate, dtype=np.float64),
        sharing,
        shared,
        counters,
    )
    return SimResult(
        params=params,
        times=inp.times,
        pages_sharing=sharing,
        pages_shared=shared,
        counters={name: int(v) for name, v in zip(COUNTERS, counters, strict=True)},
    )


def sweep(
    inp: SimInput,
    base: ScanParams,
    grid: dict[str, list[Any]],
    rate: npt.NDArray[np.float64] | None = None,
) -> list[SimResult]:
    """Every combination of the grid's values (ScanParams field -> values)."""
    names = list(grid)
    unknown = [n for n in names if n not in ScanParams.__dataclass_fields__]
    if unknown:
        raise PyksmError(f"unknown simulator parameter(s): {', '.join(unknown)}")
    return [
        simulate(inp, replace(base, **dict(zip(names, combo, strict=True))), rate=rate)
        for combo in itertools.product(*(grid[n] for n in names))
    ]


def error_against(
    predicted: npt.NDArray[np.int64], kernel: npt.NDArray[np.int64]
) -> dict[str, float]:
    """How far a prediction is from the kernel's pages_sharing at the same times.

    ``mae_rel``: mean absolute difference over the snapshots divided by the
    kernel's final pages_sharing (timing errors count); ``area_rel``: relative
    difference of the areas under both curves; ``final_rel``: at the end.
    """
    p = np.asarray(predicted, dtype=np.float64)
    k = np.asarray(kernel, dtype=np.float64)
    if p.shape != k.shape or k.size == 0:
        raise PyksmError("prediction and kernel series differ in length")
    scale = max(float(k[-1]), 1.0)
    return {
        "mae_rel": float(np.abs(p - k).mean() / scale),
        "area_rel": float(abs(p.sum() - k.sum()) / max(float(k.sum()), 1.0)),
        "final_rel": float(abs(p[-1] - k[-1]) / scale),
    }

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
those older than ``hint_max_age_ms`` dropped at pop; ``hint_order`` "lifo"
pops the newest, as the kernel does, "fifo" the oldest: a what-if for readers
that lag each other); steps alternate
``interleave = (H, L)``; a hint step visits the next present page of the
current hint (up to 8 hints tried, else a linear step), resets the page's smart
scan age and, with ``hint_skip_volatility``, skips the volatility check.
``adaptive_interleave`` runs the collector's control law
(:func:`pyksm.control.interleave.decide`, the same function) every
``adapt_period_ms`` on what the kernel would show (records pending, hints
dropped, pages per hint sent) and sets ``(H, L)`` as the knob would be set.

``pages_sharing`` and ``pages_shared`` follow the kernel's accounting including
``max_page_sharing`` chains. :func:`simulate` returns them sampled at every
snapshot time (the state when that snapshot was taken).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from pyksm.analysis.hinttrace import HintTrace
from pyksm.analysis.series import SnapshotSeries
from pyksm.control.interleave import (
    DEFAULT_LADDER,
    MAX_TERM,
    Law,
    LawState,
    Observation,
    PagesPerHint,
    Ratio,
    check_ladder,
    decide,
)
from pyksm.errors import PyksmError
from pyksm.kernel.ksm import INT_MAX, UINT_MAX

__all__ = ["ScanParams", "SimInput", "SimResult", "simulate", "sweep"]

HINT_TRIES = 8
ORDERS = ("linear", "random")
HINT_ORDERS = ("lifo", "fifo")
# counters returned by the kernel loop
C_VISITS, C_LINEAR, C_HINTED, C_MERGES, C_SKIPPED, C_AGED, C_OVERFLOW, C_VOLATILE = range(8)
C_ROUNDS = 8
COUNTERS = (
    "visits",
    "linear_visits",
    "hint_visits",
    "merges",
    "skipped",
    "hints_dropped_age",
    "hints_dropped_overflow",
    "volatile",
    "full_scans",
)


# hint_interleave's bound in the KSM++ series: H <= 16 L, L >= 1.
MAX_HINT_RATIO = 16
# The KSM++ series' KSM_HINTS_MAX_CAPACITY.
MAX_HINT_CAPACITY = 1 << 16
# ksmd batches (compiled) and adaptive periods (a Python loop) one run may
# take: beyond, it would not end.
MAX_STEPS = 10**8
MAX_PERIODS = 10**6


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
    hint_order: str = "lifo"  # which queued hint a hint step takes: newest (lifo) or oldest
    max_page_sharing: int = 256
    start: float | None = None  # ksmd starts (default: first snapshot)
    seed: int = 1
    # The collector's adaptive hint_interleave (pyksm.control.interleave): every
    # adapt_period_ms the law picks from the ladder above ``interleave`` (the base).
    adaptive_interleave: bool = False
    interleave_ladder: tuple[Ratio, ...] = DEFAULT_LADDER
    adapt_period_ms: float = 500.0

    def check(self) -> None:
        if self.order not in ORDERS:
            raise PyksmError(f"unknown scan order {self.order!r}: one of {', '.join(ORDERS)}")
        if self.hint_order not in HINT_ORDERS:
            raise PyksmError(
                f"unknown hint order {self.hint_order!r}: one of {', '.join(HINT_ORDERS)}"
            )
        if self.pages_to_scan <= 0 or self.sleep_ms <= 0:
            raise PyksmError("pages_to_scan and sleep_ms must be positive")
        # The kernel's bounds (and what the simulator's int64/int32 arrays hold),
        # finite numbers only.
        _bounded("pages_to_scan", self.pages_to_scan, 1, UINT_MAX)
        _bounded("sleep_ms", self.sleep_ms, 0, np.inf)
        _bounded("hint_capacity", self.hint_capacity, 0, MAX_HINT_CAPACITY)
        _bounded("hint_max_age_ms", self.hint_max_age_ms, 0, np.inf)
        _bounded("max_page_sharing", self.max_page_sharing, 2, INT_MAX)
        _bounded("seed", self.seed, 0, UINT_MAX)
        if self.start is not None:
            # The series clock: ksmd may have started before the first snapshot.
            _bounded("start", self.start, -np.inf, np.inf)
        if min(self.interleave) < 0:
            raise PyksmError("interleave must not be negative")
        hint, linear = self.interleave
        # As the kernel's hint_interleave: the linear scan keeps a share.
        if linear < 1 or hint > MAX_HINT_RATIO * linear or max(hint, linear) > MAX_TERM:
            raise PyksmError(
                f"interleave {hint}:{linear}: L must be at least 1 and H at most "
                f"{MAX_HINT_RATIO} x L, both at most {MAX_TERM} (the kernel refuses it)"
            )
        if self.adaptive_interleave:
            check_ladder(self.interleave_ladder)
            if self.adapt_period_ms <= 0:
                raise PyksmError("adapt_period_ms must be positive")
            _bounded("adapt_period_ms", self.adapt_period_ms, 0, np.inf)  # and finite


def _bounded(name: str, value: float, low: float, high: float) -> None:
    """``low <= value <= high`` and finite, or a one-line error naming the parameter."""
    # The range first: a huge int is no float (isfinite would overflow).
    if not (low <= value <= high and math.isfinite(value)):
        bounds = [f"at least {low}"] if low != -np.inf else []
        bounds += [f"at most {high}"] if high != np.inf else []
        where = f", {' and '.join(bounds)}" if bounds else ""
        raise PyksmError(f"{name} {value}: must be a finite number{where}")


def _step_check(what: str, ms: float, start: float, end: float, most: int) -> None:
    """Refuse a step (ksmd's sleep, the adaptive period) the run could not finish
    with: too many steps over the snapshots, or one too small to move the clock."""
    dt = ms / 1000.0
    steps = max(end - start, 0.0) / dt
    if steps > most:
        raise PyksmError(
            f"{what} {ms:g} ms over {end - start:.6g} s of snapshots is {steps:.3g} steps, "
            f"more than {most:.0e}: raise {what}"
        )
    edge = max(abs(start), abs(end))
    if end > start and edge + dt == edge:
        raise PyksmError(f"{what} {ms:g} ms is too small for a clock at {edge:g} s: raise {what}")


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
    # adaptive_interleave: (time, H, L) of every change of the ratio
    interleave_changes: list[tuple[float, int, int]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "params": asdict(self.params),
            "final_pages_sharing": int(self.pages_sharing[-1]) if self.times.size else 0,
            "mean_pages_sharing": float(self.pages_sharing.mean()) if self.times.size else 0.0,
            **self.counters,
            **(
                {"interleave_changes": len(self.interleave_changes)}
                if self.params.adaptive_interleave
                else {}
            ),
        }


@numba.njit(cache=True)
def _ref(n: int, mps: int) -> tuple[int, int]:
    """(pages_shared, pages_sharing) of a stable node with n sharers."""
    if n <= 0:
        return 0, 0
    shared = (n + mps - 1) // mps
    return shared, n - shared


@numba.njit(cache=True)
def _ref_change(n0: int, n1: int, mps: int) -> tuple[int, int]:
    """A stable node going from n0 to n1 sharers: the change of (pages_shared, pages_sharing)."""
    sh0, sg0 = _ref(n0, mps)
    sh1, sg1 = _ref(n1, mps)
    return sh1 - sh0, sg1 - sg0


class _Config(NamedTuple):
    """One scanner configuration as the jitted stages take it."""

    pages_to_scan: int
    dt: float  # sleep between batches (s)
    random_order: bool
    smart: bool
    cap: int  # hint stack records (0: no hints)
    ih: int  # hint steps ...
    il: int  # ... to linear steps per batch
    max_age: float  # s; 0: hints never expire
    skip_vol: bool
    fifo: bool  # a hint step takes the oldest queued hint (the kernel: the newest)
    mps: int  # max_page_sharing
    seed: int


class _Hints(NamedTuple):
    """The hints sent, in time order (site index ranges [lo, hi))."""

    time: npt.NDArray[np.float64]
    lo: npt.NDArray[np.int64]
    hi: npt.NDArray[np.int64]


class _Pages(NamedTuple):
    """Per site: what ksmd keeps (rmap_item), and the linear scan's order."""

    order: npt.NDArray[np.int64]
    merged: npt.NDArray[np.int32]  # content id of the stable node it shares, -1
    checksum: npt.NDArray[np.int32]  # content at the last visit (volatility gate)
    age: npt.NDArray[np.int32]  # smart scan: visits without a merge
    skips: npt.NDArray[np.int32]  # smart scan: visits still to skip


class _Trees(NamedTuple):
    """Per content id: sharers of its stable node; its unstable tree entry."""

    stable: npt.NDArray[np.int64]
    unstable_site: npt.NDArray[np.int64]
    unstable_round: npt.NDArray[np.int64]


# What a batch carries over to the next (an int64 array, read into locals at
# the start of each batch and written back at its end).
POS, ROUND, SHARED, SHARING, ST_TOP, ST_COUNT, CUR_ACTIVE, CUR_LO, CUR_HI, STEP = range(10)
NEXT_HINT = 10
STATE_SIZE = 11


@numba.njit(cache=True, inline="always")
def _smart_skip(a: int, k: int) -> tuple[int, int, bool]:
    """Smart scan at a visit of a never-merged page of age ``a`` with ``k``
    visits left to skip: (new age, new skips, skip this visit?)."""
    new_age = a + 1 if a < 255 else a
    if a < 3:
        return new_age, k, False
    if k > 0:
        return new_age, k - 1, True
    if a <= 3:
        return new_age, 1, False
    if a <= 5:
        return new_age, 2, False
    if a <= 8:
        return new_age, 4, False
    return new_age, 8, False


@numba.njit(cache=True)
def _push_hints(
    tau: float,
    hints: _Hints,
    cap: int,
    stack: _Hints,
    state: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
) -> None:
    """Hints sent by ``tau`` go on the stack (newest on top; a full stack drops its oldest)."""
    while state[NEXT_HINT] < hints.time.size and hints.time[state[NEXT_HINT]] <= tau:
        n = state[NEXT_HINT]
        if state[ST_COUNT] == cap:
            counters[C_OVERFLOW] += 1
        else:
            state[ST_COUNT] += 1
        top = state[ST_TOP]
        stack.time[top] = hints.time[n]
        stack.lo[top] = hints.lo[n]
        stack.hi[top] = hints.hi[n]
        state[ST_TOP] = (top + 1) % cap
        state[NEXT_HINT] = n + 1


@numba.njit(cache=True)
def _batch(
    row: npt.NDArray[np.int32],
    tau: float,
    budget: int,
    cfg: _Config,
    pages: _Pages,
    trees: _Trees,
    stack: _Hints,
    state: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
) -> None:
    """One ksmd batch of ``budget`` visits: a hint step or a linear step each,
    then cmp_and_merge_page. A full scan ending ends the batch too."""
    order, merged, checksum, age, skips = pages
    stable, unstable_site, unstable_round = trees
    S = row.size
    mps, cap, ih, il = cfg.mps, cfg.cap, cfg.ih, cfg.il
    smart, skip_vol = cfg.smart, cfg.skip_vol
    pos, rnd = state[POS], state[ROUND]
    shared_total, sharing_total = state[SHARED], state[SHARING]
    st_top, st_count = state[ST_TOP], state[ST_COUNT]
    cur_active, cur_lo, cur_hi = state[CUR_ACTIVE] != 0, state[CUR_LO], state[CUR_HI]
    step_no = state[STEP]
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
                        # expire from the bottom, then pop the top (no helper
                        # here: passing the stack's arrays per pop costs 2x)
                        while st_count > 0:
                            bb = (st_top - st_count + cap) % cap
                            if cfg.max_age > 0 and tau - stack.time[bb] > cfg.max_age:
                                st_count -= 1
                                counters[C_AGED] += 1
                            else:
                                break
                        if st_count == 0:
                            break
                        if cfg.fifo:
                            take_at = (st_top - st_count + cap) % cap
                        else:
                            st_top = (st_top - 1 + cap) % cap
                            take_at = st_top
                        st_count -= 1
                        cur_lo = stack.lo[take_at]
                        cur_hi = stack.hi[take_at]
                        cur_active = True
                    while cur_lo < cur_hi and row[cur_lo] < 0:
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
                    if cfg.random_order:
                        np.random.shuffle(order)
                    break
                x = order[pos]
                pos += 1
                c = row[x]
                m = merged[x]
                if m >= 0 and c != m:
                    # copy-on-write broke the sharing
                    d_shared, d_sharing = _ref_change(stable[m], stable[m] - 1, mps)
                    stable[m] -= 1
                    shared_total += d_shared
                    sharing_total += d_sharing
                    merged[x] = -1
                    m = -1
                if c < 0:
                    continue
                if smart and m < 0:
                    age[x], skips[x], skip = _smart_skip(age[x], skips[x])
                    if skip:
                        counters[C_SKIPPED] += 1
                        continue
                s = x
            if s < 0:
                break  # the round ended
            counters[C_LINEAR] += 1
        else:
            counters[C_HINTED] += 1
        # --- cmp_and_merge_page
        budget -= 1
        counters[C_VISITS] += 1
        c = row[s]
        m = merged[s]
        if m >= 0 and c != m:
            d_shared, d_sharing = _ref_change(stable[m], stable[m] - 1, mps)
            stable[m] -= 1
            shared_total += d_shared
            sharing_total += d_sharing
            merged[s] = -1
            m = -1
        if m >= 0:
            continue
        if stable[c] > 0:
            d_shared, d_sharing = _ref_change(stable[c], stable[c] + 1, mps)
            stable[c] += 1
            shared_total += d_shared
            sharing_total += d_sharing
            merged[s] = c
            counters[C_MERGES] += 1
            continue
        if not (hinted and skip_vol) and checksum[s] != c:
            checksum[s] = c
            counters[C_VOLATILE] += 1
            continue
        checksum[s] = c
        u = unstable_site[c]
        if unstable_round[c] == rnd and u != s and merged[u] < 0 and row[u] == c:
            d_shared, d_sharing = _ref_change(stable[c], stable[c] + 2, mps)
            stable[c] += 2
            shared_total += d_shared
            sharing_total += d_sharing
            merged[s] = c
            merged[u] = c
            unstable_round[c] = -1
            counters[C_MERGES] += 2
        else:
            unstable_site[c] = s
            unstable_round[c] = rnd
    state[POS], state[ROUND] = pos, rnd
    state[SHARED], state[SHARING] = shared_total, sharing_total
    state[ST_TOP], state[ST_COUNT] = st_top, st_count
    state[CUR_ACTIVE], state[CUR_LO], state[CUR_HI] = cur_active, cur_lo, cur_hi
    state[STEP] = step_no


@numba.njit(cache=True)
def _record(
    times: npt.NDArray[np.float64],
    tau: float,
    sample: int,
    state: npt.NDArray[np.int64],
    out_sharing: npt.NDArray[np.int64],
    out_shared: npt.NDArray[np.int64],
) -> int:
    """The totals now are every snapshot's up to ``tau``; returns the next snapshot."""
    while sample < times.size and times[sample] <= tau:
        out_sharing[sample] = state[SHARING]
        out_shared[sample] = state[SHARED]
        sample += 1
    return sample


# The clock of a run, carried between calls of _advance (a float64 array).
CL_TAU, CL_T, CL_SAMPLE, CL_CARRY = range(4)


class _Run(NamedTuple):
    """Everything a run keeps between batches."""

    pages: _Pages
    trees: _Trees
    stack: _Hints
    state: npt.NDArray[np.int64]
    clock: npt.NDArray[np.float64]


@numba.njit(cache=True)
def _order(S: int, seed: int, shuffle: bool) -> npt.NDArray[np.int64]:
    """The linear scan's first order (seeds numba's generator for the run)."""
    np.random.seed(seed)
    order = np.arange(S)
    if shuffle:
        np.random.shuffle(order)
    return order


def _start(S: int, ncontent: int, start: float, cfg: _Config) -> _Run:
    cap1 = max(cfg.cap, 1)  # the hint stack (circular)
    return _Run(
        _Pages(
            _order(S, cfg.seed, cfg.random_order),
            np.full(S, -1, dtype=np.int32),
            np.full(S, -1, dtype=np.int32),
            np.zeros(S, dtype=np.int32),
            np.zeros(S, dtype=np.int32),
        ),
        _Trees(
            np.zeros(ncontent, dtype=np.int64),
            np.full(ncontent, -1, dtype=np.int64),
            np.full(ncontent, -1, dtype=np.int64),
        ),
        _Hints(
            np.zeros(cap1, dtype=np.float64),
            np.zeros(cap1, dtype=np.int64),
            np.zeros(cap1, dtype=np.int64),
        ),
        np.zeros(STATE_SIZE, dtype=np.int64),
        np.array([start, 0.0, -1.0, 0.0]),  # sample -1: nothing recorded yet
    )


@numba.njit(cache=True)
def _advance(
    content: npt.NDArray[np.int32],
    times: npt.NDArray[np.float64],
    cfg: _Config,
    hints: _Hints,
    rate: npt.NDArray[np.float64],
    pages: _Pages,
    trees: _Trees,
    stack: _Hints,
    state: npt.NDArray[np.int64],
    clock: npt.NDArray[np.float64],
    until: float,
    out_sharing: npt.NDArray[np.int64],
    out_shared: npt.NDArray[np.int64],
    counters: npt.NDArray[np.int64],
) -> bool:
    """ksmd's batches, one every ``cfg.dt`` seconds, over the snapshots, up to
    ``until`` (s); True once the run is over."""
    T = content.shape[0]
    t = int(clock[CL_T])
    tau = clock[CL_TAU]
    carry = clock[CL_CARRY]
    sample = int(clock[CL_SAMPLE])
    if sample < 0:
        sample = _record(times, tau, 0, state, out_sharing, out_shared)  # before ksmd: 0
    end = times[T - 1]
    done = False
    while not done and tau < until:
        if sample >= T:
            done = True
            break
        while t + 1 < T and times[t + 1] <= tau:
            t += 1
        if cfg.cap > 0:
            _push_hints(tau, hints, cfg.cap, stack, state, counters)
        budget = cfg.pages_to_scan
        if rate.size and rate[t] >= 0:
            carry += rate[t] * cfg.dt
            budget = int(carry)
            carry -= budget
        rnd = state[ROUND]
        _batch(content[t], tau, budget, cfg, pages, trees, stack, state, counters)
        counters[C_ROUNDS] += state[ROUND] - rnd
        tau += cfg.dt
        sample = _record(times, tau, sample, state, out_sharing, out_shared)
        if tau > end + cfg.dt:
            done = True
    if sample >= T:
        done = True
    if done:
        sample = _record(times, np.inf, sample, state, out_sharing, out_shared)
    clock[CL_TAU], clock[CL_T], clock[CL_SAMPLE], clock[CL_CARRY] = tau, t, sample, carry
    return done


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
    end = float(inp.times[-1]) if T else start
    _step_check("sleep_ms", params.sleep_ms, start, end, MAX_STEPS)
    if params.adaptive_interleave:
        _step_check("adapt_period_ms", params.adapt_period_ms, start, end, MAX_PERIODS)
    cfg = _Config(
        pages_to_scan=int(params.pages_to_scan),
        dt=float(params.sleep_ms) / 1000.0,
        random_order=params.order == "random",
        smart=bool(params.smart_scan),
        cap=int(params.hint_capacity),
        ih=int(params.interleave[0]),
        il=int(params.interleave[1]),
        max_age=float(params.hint_max_age_ms) / 1000.0,
        skip_vol=bool(params.hint_skip_volatility),
        fifo=params.hint_order == "fifo",
        mps=int(params.max_page_sharing),
        seed=int(params.seed),
    )
    hints = _Hints(inp.hint_time, inp.hint_lo, inp.hint_hi)
    rates = np.empty(0) if rate is None else np.asarray(rate, dtype=np.float64)
    run = _start(inp.content.shape[1], max(ncontent, 1), start, cfg)
    out = (sharing, shared, counters)
    changes: list[tuple[float, int, int]] = []
    if not params.adaptive_interleave:
        _advance(inp.content, inp.times, cfg, hints, rates, *run, np.inf, *out)
    else:
        # The collector's law (pyksm.control.interleave) every period, on what
        # the kernel would show: hints_pending, the drop counters, pages per hint.
        law = Law.from_base(params.interleave, params.interleave_ladder)
        lstate, ppp = LawState(), PagesPerHint()
        sent_pages = np.concatenate(([0], np.cumsum(inp.hint_hi - inp.hint_lo)))
        period = params.adapt_period_ms / 1000.0
        tick = start + period
        drops = 0
        while not _advance(inp.content, inp.times, cfg, hints, rates, *run, tick, *out):
            sent = int(run.state[NEXT_HINT])
            t = int(run.clock[CL_T])
            now_drops = int(counters[C_AGED] + counters[C_OVERFLOW])
            steps = cfg.pages_to_scan / cfg.dt if rates.size == 0 else max(float(rates[t]), 0.0)
            d = decide(
                law,
                lstate,
                Observation(
                    pending=int(run.state[ST_COUNT] + run.state[CUR_ACTIVE]),
                    pages_per_hint=ppp.update(sent, int(sent_pages[sent])),
                    dropped=now_drops - drops,
                    steps_per_s=steps,
                    dt=period,
                ),
            )
            lstate, drops = d.state, now_drops
            if d.ratio != (cfg.ih, cfg.il):
                cfg = cfg._replace(ih=d.ratio[0], il=d.ratio[1])
                run.state[STEP] = 0  # as the kernel's knob write does
                changes.append((round(tick, 6), *d.ratio))
            tick += period
    return SimResult(
        params=params,
        times=inp.times,
        pages_sharing=sharing,
        pages_shared=shared,
        counters={name: int(v) for name, v in zip(COUNTERS, counters, strict=True)},
        interleave_changes=changes,
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

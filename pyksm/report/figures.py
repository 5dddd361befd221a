"""Plots (matplotlib, PNG): merges per mode against the oracle over time,
captured sharing over time in a steady scenario, the lifetimes of sharing
opportunities, and captured sharing by ksmd CPU across experiments."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pyksm.analysis import steady
from pyksm.argtypes import no_special_file
from pyksm.report.dataset import Experiment, ModeRun
from pyksm.report.equalcpu import ModePoint

MIB_PER_PAGE = 4096 / 2**20
LegendAt = Literal["best", "upper left", "lower left", "center right"]
COLORS = {
    "ksm": "#1f77b4",
    "ksm++": "#d62728",
    "ksm-nosmart": "#7f7f7f",
    "ksm++-nosmart": "#ff9896",
    "ksm-advisor": "#2ca02c",
    "ksm++-advisor": "#ff7f0e",
}
# Modes COLORS does not name (ksm@116:20, ksm++=4:1, ...), in turn.
EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def _save(fig: Figure, ax: Axes, path: Path, legend: LegendAt) -> Path:
    """Legend at ``legend``, layout, PNG at ``path``; the figure is closed."""
    ax.legend(loc=legend, fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(no_special_file(path))
    finally:
        plt.close(fig)
    return path


def _on_grid(runs: list[ModeRun], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Every repetition's ``key`` on one 1 s grid (NaN after a repetition
    ended), so that their median can be taken at each second."""
    end = max(float(r.t[-1]) for r in runs)
    grid = np.arange(0.0, np.floor(end) + 1.0)
    rows = np.full((len(runs), grid.size), np.nan)
    for i, r in enumerate(runs):
        inside = grid <= r.t[-1]
        rows[i, inside] = np.interp(grid[inside], r.t, getattr(r, key))
    return grid, rows


def _median_curve(runs: list[ModeRun], key: str) -> tuple[np.ndarray, np.ndarray]:
    if len(runs) == 1:
        return runs[0].t, getattr(runs[0], key)
    grid, rows = _on_grid(runs, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # seconds no repetition reached
        return grid, np.nanmedian(rows, axis=0)


def merge_figure(exp: Experiment, path: Path) -> Path:
    """pages_sharing per mode, each against its own runs' oracle (dashed, same
    colour): the workload is the same, but how far the guests get in a given
    time depends on the machine's load in that run. With repetitions, each
    one is drawn faint and the median over them (at each second) strong."""
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for mode, runs in exp.reps.items():
        color = COLORS.get(mode)
        many = len(runs) > 1
        if many:
            for r in runs:
                ax.plot(r.t, r.oracle * MIB_PER_PAGE, lw=0.6, ls="--", color=color, alpha=0.2)
                ax.plot(r.t, r.pages_sharing * MIB_PER_PAGE, lw=0.8, color=color, alpha=0.25)
        which = f", median of {len(runs)}" if many else ""
        t, oracle = _median_curve(runs, "oracle")
        ax.plot(
            t,
            oracle * MIB_PER_PAGE,
            lw=1.2,
            ls="--",
            color=color,
            alpha=0.8,
            label=f"{mode} oracle (could be shared){which}",
        )
        t, sharing = _median_curve(runs, "pages_sharing")
        ax.plot(
            t,
            sharing * MIB_PER_PAGE,
            lw=1.8,
            color=color,
            label=f"{mode} pages_sharing{which}",
        )
    ax.set_xlabel("time since the guests started (s)")
    ax.set_ylabel("memory saved (MiB)")
    cfg = exp.config
    reps = " (faint: each repetition)" if exp.repeated else ""
    ax.set_title(
        f"{exp.scenario}: {cfg.get('pages_to_scan')} pages / "
        f"{cfg.get('sleep_millisecs')} ms" + reps + ("" if exp.complete else " (PARTIAL)")
    )
    ax.grid(alpha=0.3)
    return _save(fig, ax, path, "upper left")


# The bar issue 16 sets for ksm++ in the steady state (a reference line).
STEADY_TARGET = 0.8


def steady_figure(exp: Experiment, path: Path, window_s: float) -> Path:
    """Captured sharing over time per mode, in bins of steady.BIN_S from the
    start (∫pages_sharing / ∫oracle in each bin): every repetition faint, the
    median over them (bin by bin) strong; the steady window shaded (its span
    over the repetitions), and the 0.8 bar dotted."""
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    spans = []
    for mode, runs in exp.reps.items():
        color = COLORS.get(mode)
        curves = []
        for r in runs:
            x, y = steady.captured_bins(r.t, r.pages_sharing, r.oracle, steady.BIN_S, start=0.0)
            curves.append((x, y))
            st = steady.steady_state(r.t, r.pages_sharing, r.oracle, window_s)
            if st.window_s > 0:
                spans.append((st.start_s, st.end_s, st.window_s))
            if len(runs) > 1:
                ax.plot(x, y, lw=0.8, color=color, alpha=0.25)
        longest = max((x for x, _ in curves), key=len)
        if not longest.size:
            continue  # too short for one bin
        rows = np.full((len(curves), longest.size), np.nan)
        for i, (_, y) in enumerate(curves):
            rows[i, : y.size] = y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # bins no repetition reached
            median = np.nanmedian(rows, axis=0)
        which = f", median of {len(runs)}" if len(runs) > 1 else ""
        ax.plot(longest, median, lw=1.8, color=color, label=f"{mode}{which}")
    if spans:
        lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
        used = min(s[2] for s in spans)
        label = (
            f"steady window (last {used / 60:g} min)"
            if used >= window_s
            else f"steady window (last half: the run is shorter than {2 * window_s:g} s)"
        )
        ax.axvspan(lo, hi, color="#999999", alpha=0.15, label=label)
    ax.axhline(STEADY_TARGET, ls=":", lw=1, color="#444444", label=f"{STEADY_TARGET} of the oracle")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time since the guests started (s)")
    ax.set_ylabel(f"captured sharing ({steady.BIN_S:g} s bins)")
    reps = " (faint: each repetition)" if exp.repeated else ""
    ax.set_title(
        f"{exp.scenario}: pages_sharing / oracle over time{reps}"
        + ("" if exp.complete else " (PARTIAL)")
    )
    ax.grid(alpha=0.3)
    return _save(fig, ax, path, "lower left")


def lifetime_figure(exp: Experiment, path: Path) -> Path:
    """From the first mode's first repetition: the workload, not the mode,
    makes the opportunities (every repetition runs the same seeded workload)."""
    run = next(iter(exp.reps.values()))[0]
    hist = run.summary.lifetimes if run.summary else {}
    edges = hist.get("edges_s", [])
    labels = [
        f"{a:g}-{b:g} s" if b != float("inf") and b < 1e12 else f"> {a:g} s"
        for a, b in itertools.pairwise(edges)
    ]
    ended = hist.get("ended", [0] * len(labels))
    open_ = hist.get("open_at_end", [0] * len(labels))
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=110)
    x = range(len(labels))
    ax.bar(x, ended, color="#1f77b4", label="ended during the run")
    ax.bar(x, open_, bottom=ended, color="#aec7e8", label="still open at the end")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("sharing opportunities")
    ax.set_title(f"{exp.scenario}: how long sharing opportunities lived (oracle)")
    return _save(fig, ax, path, "best")


def cpu_sharing_figure(points: list[ModePoint], scenario: str, path: Path) -> Path:
    """Captured sharing against ksmd CPU for every mode of ``scenario`` across
    the experiments given (pyksm.report.equalcpu): each repetition a faint
    dot, each mode's median a marker with its intervals as error bars.
    Linear modes are drawn as circles, hinted modes as diamonds."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    mine = [q for q in points if q.scenario == scenario]
    names = [q.mode for q in mine]
    others = itertools.cycle(EXTRA_COLORS)
    for p in mine:
        color = COLORS.get(p.mode) or next(others)
        cpu, cap = p.cpu.interval, p.captured.interval
        n = min(len(cpu.values), len(cap.values))
        ax.scatter(cpu.values[:n], cap.values[:n], color=color, alpha=0.3, s=14)
        xm, ym = cpu.median or 0.0, cap.median or 0.0
        xerr = [
            [xm - (cpu.low if cpu.low is not None else xm)],
            [(cpu.high if cpu.high is not None else xm) - xm],
        ]
        yerr = [
            [ym - (cap.low if cap.low is not None else ym)],
            [(cap.high if cap.high is not None else ym) - ym],
        ]
        ax.errorbar(
            [xm],
            [ym],
            xerr=xerr,
            yerr=yerr,
            color=color,
            capsize=3,
            marker="D" if p.hinted else "o",
            markersize=7,
            linestyle="none",
            label=f"{p.mode} (n = {cap.n})" + (f", {p.where}" if names.count(p.mode) > 1 else ""),
        )
    ax.set_xlabel("ksmd CPU (% of one CPU)")
    ax.set_ylabel("captured sharing (of the oracle)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{scenario}: captured sharing by ksmd CPU (median, 95 % interval)")
    ax.grid(alpha=0.3)
    return _save(fig, ax, path, "center right")

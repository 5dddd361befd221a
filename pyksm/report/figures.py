"""Plots over time (matplotlib, PNG): merges per mode against the oracle,
and the lifetimes of sharing opportunities."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pyksm.report.dataset import Experiment

MIB_PER_PAGE = 4096 / 2**20
COLORS = {
    "ksm": "#1f77b4",
    "ksm++": "#d62728",
    "ksm-nosmart": "#7f7f7f",
    "ksm++-nosmart": "#ff9896",
    "ksm-advisor": "#2ca02c",
    "ksm++-advisor": "#ff7f0e",
}


def merge_figure(exp: Experiment, path: Path) -> Path:
    """pages_sharing per mode, each against its own run's oracle (dashed, same
    colour): the workload is the same, but how far the guests get in a given
    time depends on the machine's load in that run."""
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for mode, run in exp.runs.items():
        color = COLORS.get(mode)
        ax.plot(
            run.t,
            run.oracle * MIB_PER_PAGE,
            lw=1.2,
            ls="--",
            color=color,
            alpha=0.8,
            label=f"{mode} oracle (could be shared)",
        )
        ax.plot(
            run.t,
            run.pages_sharing * MIB_PER_PAGE,
            lw=1.8,
            color=color,
            label=f"{mode} pages_sharing",
        )
    ax.set_xlabel("time since the guests started (s)")
    ax.set_ylabel("memory saved (MiB)")
    cfg = exp.config
    ax.set_title(
        f"{exp.scenario}: {cfg.get('pages_to_scan')} pages / "
        f"{cfg.get('sleep_millisecs')} ms" + ("" if exp.complete else " (PARTIAL)")
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def lifetime_figure(exp: Experiment, path: Path) -> Path:
    run = next(iter(exp.runs.values()))
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
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

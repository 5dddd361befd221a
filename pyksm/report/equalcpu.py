"""Hinted against linear KSM by the ksmd CPU each used, across experiments.

A scan rate buys linear KSM its CPU; a hinted mode uses what its hints make
ksmd do. Runs at exactly equal CPU are rare, so this compares a hinted mode
with every linear mode of its family (ksm++ and ksm++-adaptive with ksm at
any scan rate, ksm++-nosmart with ksm-nosmart, ksm++-advisor with
ksm-advisor), same scenario, same machine (one experiment or several:
``pyksm report A B``), and names the *bound*: the linear mode with the least
median ksmd CPU that is still at or above the hinted mode's. Assuming that
linear KSM's captured sharing does not fall as its scan rate rises (a faster
scan visits every page no later), that linear mode captures at least what
linear KSM at the hinted mode's CPU would, and the hinted mode's ratio over
it is a lower bound of the ratio of medians at equal ksmd CPU. Only ksmd's
CPU is compared: the collector's, in hinted modes, is not in it.

Ratios are of medians, and "at the ends": the hinted mode's lower interval
end over the linear mode's upper end, the pessimistic reading of the two
intervals (n = 1: the values themselves). Experiments compare only when
their machine (host.json: CPU model, CPU count, host kernel, accelerator)
and test kernel release agree; results without host.json are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyksm.experiment.hostinfo import HostInfo
from pyksm.report.aggregate import ExperimentStats, Stat, linear_twin

__all__ = [
    "CAPTURED",
    "CPU",
    "FLOOR",
    "EqualCpuRow",
    "ModePoint",
    "compare",
    "family",
    "points",
]

CAPTURED = "captured_sharing_fraction"
CPU = "ksmd_cpu_percent"
# A linear mode's captured sharing below this has no ratio: it merged next to nothing.
FLOOR = 1e-3


@dataclass(frozen=True)
class ModePoint:
    """One mode of one experiment: its ksmd CPU and captured sharing."""

    scenario: str
    path: Path
    mode: str
    machine: tuple[str, ...]
    cpu: Stat
    captured: Stat

    @property
    def where(self) -> str:
        """The experiment's directory as OUTDIR/SCENARIO, to tell experiments apart."""
        return "/".join(self.path.parts[-2:])

    @property
    def hinted(self) -> bool:
        return self.mode.startswith("ksm++")

    @property
    def cpu_median(self) -> float:
        return self.cpu.interval.median or 0.0


@dataclass(frozen=True)
class EqualCpuRow:
    """A hinted mode against one linear mode of the same scenario and machine."""

    hinted: ModePoint
    linear: ModePoint
    # The linear mode's median ksmd CPU over the hinted mode's (None: the
    # hinted mode used no measurable CPU).
    cpu_ratio: float | None
    # Captured sharing, hinted over linear: medians, and the hinted mode's low
    # end over the linear mode's high end. None: the linear figure is below FLOOR.
    by_medians: float | None
    by_ends: float | None
    # This linear mode is the hinted mode's bound (see the module doc).
    bound: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.hinted.scenario,
            "hinted_mode": self.hinted.mode,
            "hinted_path": str(self.hinted.path),
            "linear_mode": self.linear.mode,
            "linear_path": str(self.linear.path),
            "hinted_ksmd_cpu_percent": self.hinted.cpu.to_json(),
            "linear_ksmd_cpu_percent": self.linear.cpu.to_json(),
            "linear_over_hinted_ksmd_cpu_ratio": self.cpu_ratio,
            "hinted_captured_sharing_fraction": self.hinted.captured.to_json(),
            "linear_captured_sharing_fraction": self.linear.captured.to_json(),
            "captured_sharing_ratio_by_medians": self.by_medians,
            "captured_sharing_ratio_by_interval_ends": self.by_ends,
            "lower_bound_at_equal_cpu": self.bound,
        }


def _machine(host: HostInfo, kernel: object) -> tuple[str, ...]:
    return (host.cpu_model, str(host.cpus), host.kernel, host.accel, str(kernel))


def family(mode: str) -> str:
    """The linear mode family a mode belongs to or is compared with: its
    linear twin without scan rate or fixed interleave (aggregate.linear_twin),
    so ksm++ and ksm++-adaptive compare with ksm at any scan rate."""
    return linear_twin(mode)


def points(stats: list[ExperimentStats]) -> list[ModePoint]:
    """Every mode of every experiment (each directory once) that has both
    figures and a machine record."""
    out = []
    seen: set[Path] = set()
    for st in stats:
        where = st.exp.path.resolve()
        if st.exp.host is None or where in seen:
            continue
        seen.add(where)
        machine = _machine(st.exp.host, st.exp.config.get("kernel"))
        for mode, ms in st.modes.items():
            cpu, cap = ms.stats.get(CPU), ms.stats.get(CAPTURED)
            if cpu is None or cap is None:
                continue
            if cpu.interval.median is None or cap.interval.median is None:
                continue
            out.append(ModePoint(st.exp.scenario, st.exp.path, mode, machine, cpu, cap))
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den < FLOOR:
        return None
    return num / den


def compare(stats: list[ExperimentStats]) -> list[EqualCpuRow]:
    """Every hinted mode against every linear mode of its family, scenario and
    machine, linear modes by rising CPU. Only where there are two such
    linear modes or more (scan rates): against one, the experiment's own
    ratios per repetition pair say it all."""
    pts = points(stats)
    rows = []
    for h in (p for p in pts if p.hinted):
        linear = sorted(
            (
                p
                for p in pts
                if not p.hinted
                and p.scenario == h.scenario
                and p.machine == h.machine
                and family(p.mode) == family(h.mode)
            ),
            key=lambda p: p.cpu_median,
        )
        if len(linear) < 2:
            continue
        at_least = [p for p in linear if p.cpu_median >= h.cpu_median]
        bound = at_least[0] if at_least else None
        for lin in linear:
            hi, li = h.captured.interval, lin.captured.interval
            rows.append(
                EqualCpuRow(
                    hinted=h,
                    linear=lin,
                    cpu_ratio=lin.cpu_median / h.cpu_median if h.cpu_median > 0 else None,
                    by_medians=_ratio(hi.median, li.median),
                    by_ends=_ratio(
                        hi.low if hi.low is not None else hi.median,
                        li.high if li.high is not None else li.median,
                    ),
                    bound=lin is bound,
                )
            )
    return rows

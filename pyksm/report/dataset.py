"""Load an experiment's results directory (written by pyksm.experiment.runner):
every repetition of every mode; the single-run layout of older results is one
repetition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pyksm.errors import PyksmError
from pyksm.experiment import hostinfo
from pyksm.experiment.hostinfo import HostInfo
from pyksm.experiment.results import (
    Sample,
    Summary,
    mode_reps,
    read_json,
    read_samples,
    read_summary,
)


@dataclass
class ModeRun:
    """One repetition of one mode."""

    scenario: str
    mode: str
    t: np.ndarray
    pages_sharing: np.ndarray
    oracle: np.ndarray
    oracle_file: np.ndarray
    ksmd_ticks: np.ndarray
    rows: list[Sample]
    summary: Summary | None = None
    rep: int = 1

    @property
    def complete(self) -> bool:
        return self.summary is not None

    def last(self, key: str) -> int:
        """A counter's last value; a counter the kernel lacks is 0 (none happened)."""
        return int(self.rows[-1].get(key, 0)) if self.rows else 0

    def first(self, key: str) -> int:
        return int(self.rows[0].get(key, 0)) if self.rows else 0


@dataclass
class Experiment:
    path: Path
    scenario: str
    config: dict[str, Any]
    # Every mode's repetitions that have samples, by repetition number.
    reps: dict[str, list[ModeRun]]
    complete: bool
    # The machine it ran on (host.json; None for results from before it)
    host: HostInfo | None = None

    @property
    def all_runs(self) -> list[ModeRun]:
        """Every repetition of every mode, mode by mode."""
        return [r for runs in self.reps.values() for r in runs]

    @property
    def repeated(self) -> bool:
        return any(len(runs) > 1 for runs in self.reps.values())

    @property
    def steady_window_s(self) -> float | None:
        """The steady-state window of a steady scenario (config.json's
        scenario.steady_window_s); None for other scenarios and older results."""
        sc = self.config.get("scenario")
        w = sc.get("steady_window_s") if isinstance(sc, dict) else None
        if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
            return None
        return float(w)


def load_mode(scenario: str, mode_dir: Path, mode: str | None = None, rep: int = 1) -> ModeRun:
    """One repetition's samples and summary from ``mode_dir`` (MODE/rep-NN,
    or MODE in the single-run layout)."""
    rows = read_samples(mode_dir / "samples.jsonl")
    summary = read_summary(mode_dir / "summary.json")

    def col(key: str) -> np.ndarray:
        return np.array([getattr(r, key) for r in rows], dtype=float)

    return ModeRun(
        scenario=scenario,
        mode=mode or mode_dir.name,
        t=col("t"),
        pages_sharing=col("pages_sharing"),
        oracle=col("oracle"),
        oracle_file=col("oracle_file"),
        ksmd_ticks=col("ksmd_ticks"),
        rows=rows,
        summary=summary,
        rep=rep,
    )


def load(path: Path) -> Experiment:
    """``path`` is OUTDIR/SCENARIO (holding config.json and one dir per mode)."""
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise PyksmError(f"{path} has no config.json: not a pyksm experiment directory")
    config = read_json(cfg_path)
    if not isinstance(config, dict) or not isinstance(config.get("modes", []), list):
        raise PyksmError(f"{cfg_path}: field 'modes' is not a list of mode names")
    scenario_doc = config.get("scenario", {})
    if not isinstance(scenario_doc, dict):
        # The report reads scenario.description, .steady_window_s, ... from it.
        raise PyksmError(
            f"{cfg_path}: field 'scenario' is {type(scenario_doc).__name__}, expected an object"
        )
    scenario = str(scenario_doc.get("name", path.name))
    reps: dict[str, list[ModeRun]] = {}
    for mode in config.get("modes", []):
        if not isinstance(mode, str) or not mode or "/" in mode or mode in (".", ".."):
            raise PyksmError(f"{cfg_path}: field 'modes' holds {mode!r}, not a mode name")
        found = [load_mode(scenario, d, mode, rep) for rep, d in mode_reps(path / mode)]
        if found:
            reps[mode] = found
    if not reps:
        raise PyksmError(f"{path}: no mode has samples yet")
    exp = Experiment(path, scenario, config, reps, complete=False, host=hostinfo.load(path))
    exp.complete = (path / "complete").exists() and all(r.complete for r in exp.all_runs)
    return exp


def find(paths: list[Path]) -> list[Experiment]:
    """Experiments under each path (a scenario dir, or an outdir holding several)."""
    found = []
    for p in paths:
        if (p / "config.json").exists():
            found.append(load(p))
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / "config.json").exists())
            if not subs:
                raise PyksmError(f"{p}: no experiment results found")
            found.extend(load(d) for d in subs)
        else:
            raise PyksmError(f"{p}: no such results directory")
    return found

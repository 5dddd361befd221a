"""Which oracle an experiment's figures came from, and how its merges
validated (real-QEMU scenarios: pyksm.experiment.oracle_snapshot).

The ledger scenarios' oracle is exact (each guest's content ledger, every
second); real guests' is snapshots of their RAM every few seconds, and their
summaries carry the validation: precision (merged pages whose content
agrees with their KSM page) and the recall of long-lived opportunities.
"""

from __future__ import annotations

from typing import Any

from pyksm.report.dataset import Experiment
from pyksm.report.metrics import captured_file, captured_file_cross, cross_share

__all__ = ["oracle_kind", "oracle_note", "validation_rows"]


def oracle_kind(exp: Experiment) -> str:
    """ "ledger" or "snapshot" (results from before real guests: ledger)."""
    kinds = {r.summary.oracle for r in exp.all_runs if r.summary and r.summary.oracle}
    kind = exp.config.get("oracle") or (kinds.pop() if len(kinds) == 1 else None)
    return str(kind or "ledger")


def oracle_note(exp: Experiment) -> str:
    if oracle_kind(exp) != "snapshot":
        return (
            "oracle: the guests' content ledgers (exact, every second); captured sharing = "
            "∫ pages_sharing dt / ∫ oracle dt."
        )
    sc = exp.config.get("scenario", {})
    every = sc.get("snapshot_interval_s", "?") if isinstance(sc, dict) else "?"
    return (
        f"oracle: snapshots of the real guests' RAM every {every} s (pagemap + /proc/PID/mem, "
        "hashed); opportunities = the guests' non-zero pages minus their distinct contents; "
        "captured sharing = ∫ kernel sharing among the guests dt / ∫ opportunities dt "
        "(both from the last snapshot at each second)."
    )


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def validation_rows(exp: Experiment) -> list[dict[str, str]]:
    """One row per repetition that validated its merges (snapshot oracle)."""
    rows = []
    for run in exp.all_runs:
        v = run.summary.validation if run.summary else None
        if not v:
            continue
        rows.append(
            {
                "mode": run.mode,
                "rep": str(run.rep),
                "captured (disk blocks)": _fmt(captured_file(run), ".3f"),
                "of them across guests": _fmt(cross_share(run), ".3f"),
                "captured (across guests)": _fmt(captured_file_cross(run), ".3f"),
                "snapshots": str(v.get("snapshots", "")),
                "s per snapshot": _fmt(v.get("snapshot_seconds_mean"), ".1f"),
                "merged pages checked": str(v.get("merged_pages_checked", "")),
                "precision": _fmt(v.get("precision"), ".4f"),
                f"recall (lived ≥ {v.get('long_lived_s', '?')} s)": _fmt(
                    v.get("long_lived_recall"), ".3f"
                ),
                "long-lived": str(v.get("long_lived", "")),
                "peak opportunities": str(v.get("peak_opportunities", "")),
            }
        )
    return rows

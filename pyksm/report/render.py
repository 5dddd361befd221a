"""``pyksm report RESULTS…``: PNGs, one self-contained HTML file and a rich
terminal summary for one or more experiments."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyksm.analysis import steady
from pyksm.analysis.intervals import CONFIDENCE, RESAMPLES, SEED
from pyksm.analysis.steady import SteadyState
from pyksm.argtypes import no_special_file
from pyksm.experiment import hostinfo
from pyksm.experiment.results import IO_PACE_OK
from pyksm.kernel.ksm import MergeFailures
from pyksm.report import aggregate, equalcpu, figures
from pyksm.report.aggregate import CounterGroup, ExperimentStats, ModeStats, Stat, Trend
from pyksm.report.dataset import Experiment
from pyksm.report.equalcpu import EqualCpuRow
from pyksm.report.validation import oracle_note, validation_rows

Fmt = Callable[[float], str]
BELOW_PACE = "†"


def _fmt_value(v: float, fmt: Fmt) -> str:
    return "never" if math.isinf(v) else fmt(v)


def cell(stat: Stat | None, fmt: Fmt) -> str:
    """``median [low, high]``; just the value for one repetition (or when the
    interval shows as the same value); "" for none."""
    if stat is None:
        return ""
    iv = stat.interval
    if iv.median is None:
        return ""
    text = _fmt_value(iv.median, fmt)
    if iv.low is None or iv.high is None:
        return text
    low, high = _fmt_value(iv.low, fmt), _fmt_value(iv.high, fmt)
    # All repetitions alike at this precision (n says how many): the value once.
    return text if low == high == text else f"{text} [{low}, {high}]"


def _f(spec: str) -> Fmt:
    return lambda v: format(v, spec)


def _ratio_fmt(v: float) -> str:
    return f"{v:.2f}x"


# (column, metrics.json key, format) of the per-mode table.
COLUMNS: tuple[tuple[str, str, Fmt], ...] = (
    ("captured sharing", "captured_sharing_fraction", _f(".3f")),
    ("vs ksm", "captured_sharing_vs_ksm_ratio", _ratio_fmt),
    ("t50 (s)", "t50_s", _f(".0f")),
    ("t90 (s)", "t90_s", _f(".0f")),
    ("mean saved (MiB)", "mean_sharing_mib", _f(".0f")),
    ("mean oracle (MiB)", "mean_oracle_mib", _f(".0f")),
    ("ksmd CPU (%)", "ksmd_cpu_percent", _f(".1f")),
    ("CPU vs ksm", "ksmd_cpu_vs_ksm_ratio", _ratio_fmt),
    ("ksmd µs/page", "ksmd_us_per_scanned_page", _f(".1f")),
)

# (column, metrics.json key, format) of the ksmd cost table.
COST_COLUMNS: tuple[tuple[str, str, Fmt], ...] = (
    ("ksmd CPU (%)", "ksmd_cpu_percent", _f(".1f")),
    ("CPU vs ksm", "ksmd_cpu_vs_ksm_ratio", _ratio_fmt),
    ("µs / scanned page", "ksmd_us_per_scanned_page", _f(".1f")),
    ("µs / scanned page vs ksm", "ksmd_us_per_scanned_page_vs_ksm_ratio", _ratio_fmt),
    ("ms / saved page", "ksmd_ms_per_saved_page", _f(".2f")),
    ("CPU to ksm's peak vs ksm", aggregate.REACH_KEY, _ratio_fmt),
)
COST_NOTE = (
    "ksmd's CPU over the run; per page it scanned (linear and hinted visits: where the "
    "modes scan alike, what a hinted visit costs); per page of mean sharing (ms of ksmd "
    "CPU per saved page); and the CPU a mode spent until it first shared as many pages "
    "as ksm's peak, over what ksm spent to get there (per repetition pair; never: it did "
    "not get there; blank: ksm shared less than 1 MiB). Medians [95 % interval]."
)


def _get(ms: ModeStats, key: str) -> Stat | None:
    return ms.stats.get(key) or ms.ratios.get(key)


def _vs_ksm(ms: ModeStats, modes: dict[str, ModeStats], key: str, fmt: Fmt) -> str:
    """A ratio cell (over the mode's baseline, see aggregate.baseline_of);
    1 for a baseline that has none itself; with no pair that has a ratio,
    why: the baseline merged next to nothing."""
    stat = ms.ratios.get(key)
    if stat is not None and stat.interval.n:
        return cell(stat, fmt)
    if ms.baseline is None:
        serves = ms.mode == aggregate.BASE or any(o.baseline == ms.mode for o in modes.values())
        return fmt(1.0) if serves else ""
    base = modes.get(ms.baseline)
    if key != "captured_sharing_vs_ksm_ratio" or base is None or not base.n or not ms.n:
        return ""
    own = ms.stats["captured_sharing_fraction"].interval.median or 0.0
    return f"{ms.baseline} ≈ 0" if own >= 1e-3 else "—"


def _column(ms: ModeStats, modes: dict[str, ModeStats], key: str, fmt: Fmt) -> str:
    """A table cell of metrics.json key ``key`` (a ratio to ksm or a figure)."""
    if key.endswith("_vs_ksm_ratio"):
        return _vs_ksm(ms, modes, key, fmt)
    return cell(_get(ms, key), fmt)


def _medians(ms: ModeStats, *keys: str) -> str:
    vals = [ms.stats[k].interval.median for k in keys]
    return " / ".join("" if v is None else f"{v:.0f}" for v in vals)


def _mode_label(ms: ModeStats) -> str:
    return f"{ms.mode} {BELOW_PACE}" if ms.below_pace else ms.mode


def _slope(v: float) -> str:
    return f"{v:+.3f}"


def trend_cell(trend: Trend | None) -> str:
    """``slope [low, high] verdict``; with repetitions, how many had no
    downward trend on their own."""
    if trend is None:
        return ""
    if trend.slope is None:
        return trend.verdict
    text = _slope(trend.slope)
    if trend.low is not None and trend.high is not None:
        text += f" [{_slope(trend.low)}, {_slope(trend.high)}]"
    text += f" {trend.verdict}"
    if trend.reps_with_slope > 1:
        text += f" ({trend.reps_no_downward}/{trend.reps_with_slope} reps flat or up)"
    return text


def steady_label(modes: dict[str, ModeStats]) -> str:
    """The steady columns' window: "last 10 min", or "last half" when a
    repetition was shorter than twice the window ("" without steady state)."""
    states = [m.steady for ms in modes.values() for m in ms.runs if m.steady is not None]
    if not states:
        return ""
    if any(s.shortened for s in states):
        return "last half"
    return f"last {min(s.window_s for s in states) / 60:g} min"


def mode_rows(modes: dict[str, ModeStats]) -> list[dict[str, str]]:
    """The per-mode table: medians [95 % interval] over the repetitions; in a
    steady scenario, captured sharing over the steady window and its trend
    beside the whole run's."""
    rows = []
    window = steady_label(modes)
    for ms in modes.values():
        row = {"mode": _mode_label(ms), "n": str(ms.n)}
        for col, key, fmt in COLUMNS:
            row[col] = _column(ms, modes, key, fmt)
            if window and key == "captured_sharing_vs_ksm_ratio":
                row[f"captured, {window}"] = cell(
                    (ms.steady or {}).get("captured_sharing_fraction"), _f(".3f")
                )
                row["trend (/10 min)"] = trend_cell(ms.trend)
        row["hints rcvd / pages / merged"] = _medians(
            ms, "hints_received_count", "hint_pages_scanned_count", "hint_pages_merged_count"
        )
        pace = cell(ms.stats["guest_io_pace_fraction"], _f(".0%"))
        if ms.below_pace:
            pace += f" {BELOW_PACE}{len(ms.below_pace)}/{ms.n}"
        row["guest I/O"] = pace
        rows.append(row)
    return rows


def cost_rows(modes: dict[str, ModeStats]) -> list[dict[str, str]]:
    """The ksmd cost table (COST_COLUMNS, COST_NOTE)."""
    rows = []
    for ms in modes.values():
        row = {"mode": _mode_label(ms), "n": str(ms.n)}
        row |= {col: _column(ms, modes, key, fmt) for col, key, fmt in COST_COLUMNS}
        rows.append(row)
    return rows


def metric_rows(exp: Experiment) -> list[dict[str, str]]:
    """The per-mode table of one experiment over all its repetitions."""
    return mode_rows(aggregate.summarize(exp).modes)


def _order(exp: Experiment) -> dict[tuple[int, str], int]:
    """(rep, mode) -> its place in the run order (from 1), where config.json has it."""
    order = exp.config.get("order")
    if not isinstance(order, list):
        return {}
    places = {}
    for i, step in enumerate(order, 1):
        if isinstance(step, list) and len(step) == 2 and isinstance(step[0], int):
            places[(step[0], str(step[1]))] = i
    return places


def _at(stat: Stat | None, rep: int) -> float | None:
    if stat is None or rep not in stat.reps:
        return None
    return stat.interval.values[stat.reps.index(rep)]


def _rep_steady(sd: SteadyState | None, window: str) -> dict[str, str]:
    """One repetition's steady columns (its own Sen interval and verdict)."""
    if sd is None:
        return {f"captured, {window}": "", "trend (/10 min)": ""}
    own = Trend(
        slope=sd.slope_per_10min,
        low=sd.slope_low_per_10min,
        high=sd.slope_high_per_10min,
        interval="sen",
        verdict=sd.verdict,
        reps_no_downward=int(sd.verdict == steady.NO_DOWNWARD),
        reps_with_slope=int(sd.slope_per_10min is not None),
    )
    return {
        f"captured, {window}": "" if sd.captured is None else f"{sd.captured:.3f}",
        "trend (/10 min)": trend_cell(own),
    }


def rep_rows(st: ExperimentStats) -> list[dict[str, str]]:
    """Every repetition on its own, in the order they ran; below pace marked."""
    places = _order(st.exp)
    window = steady_label(st.modes)
    rows = []
    for ms in st.modes.values():
        ratio = ms.ratios.get("captured_sharing_vs_ksm_ratio")
        for m in ms.runs:
            r = _at(ratio, m.rep)
            rows.append(
                {
                    "run": str(places.get((m.rep, m.mode), "")),
                    "rep": str(m.rep),
                    "mode": m.mode,
                    "captured sharing": f"{m.captured:.3f}",
                    "vs ksm": "" if r is None else _ratio_fmt(r),
                    **(_rep_steady(m.steady, window) if window else {}),
                    "t50 (s)": "never" if m.t50 is None else f"{m.t50:.0f}",
                    "t90 (s)": "never" if m.t90 is None else f"{m.t90:.0f}",
                    "ksmd CPU (%)": f"{m.ksmd_cpu_pct:.1f}",
                    "guest I/O": "" if m.io_achieved is None else f"{m.io_achieved:.0%}",
                    "idle": "" if m.idle_fraction is None else f"{m.idle_fraction:.0%}",
                    "steal": "" if m.steal_fraction is None else f"{m.steal_fraction:.0%}",
                    "below pace": BELOW_PACE if m.below_pace else "",
                }
            )
    rows.sort(key=lambda r: (int(r["run"]) if r["run"] else 1 << 30, int(r["rep"])))
    return rows


CPU_TASKS = ("ksmd", "guests", "collector", "runner", "idle")


def cpu_rows(exp: Experiment, st: ExperimentStats | None = None) -> list[dict[str, str]]:
    """Where the CPUs went in each mode, in % of one CPU (medians [95 % interval])."""
    st = st or aggregate.summarize(exp)
    rows = []
    for ms in st.modes.values():
        by = ms.cpu_by_task
        if by:
            rows.append({"mode": ms.mode} | {t: cell(by.get(t), _f(".0f")) for t in CPU_TASKS})
    return rows


def counter_rows(st: ExperimentStats, group: CounterGroup) -> list[dict[str, str]]:
    """One counter group's table (e.g. the diagnosis counters): per mode the
    median [95 % interval] of each counter's growth over the repetitions;
    modes without any of its counters are left out."""
    rows = []
    for ms in st.modes.values():
        stats = ms.counters.get(group.key)
        if stats is None:
            continue
        rows.append(
            {"mode": ms.mode, "n": str(ms.n)}
            | {col: cell(stats.get(q.key), _f(group.fmt)) for col, q in group.columns}
        )
    return rows


HINT_CLASSES = ("merged", "first", "missed", "failed", "other")


def hint_visit_rows(exp: Experiment, st: ExperimentStats | None = None) -> list[dict[str, str]]:
    """Hinted visits by class (runs with --trace-hints; see
    pyksm.experiment.hintpairs), summed over the repetitions: of the visits
    that could have paired with a copy visited before, the share the
    unstable-tree search missed."""
    st = st or aggregate.summarize(exp)
    rows = []
    for ms in st.modes.values():
        hv = ms.hint_visits
        if not hv:
            continue
        second = hv.get("missed", 0) + hv.get("merged", 0)
        rows.append(
            {"mode": ms.mode, "reps": str(sum(1 for m in ms.runs if m.hint_visits))}
            | {c: str(hv.get(c, 0)) for c in HINT_CLASSES}
            | {
                "missed / (missed + merged)": f"{hv.get('missed', 0) / second:.0%}"
                if second
                else "",
                "lost events": str(hv.get("lost", 0)),
            }
        )
    return rows


VISIT_NOTE = (
    "ksmd's visits by kind (--visit-cost, kprobes of bpf/ksmd_visits.c), summed over the "
    "repetitions that timed them: hinted (a hint brought ksmd to the page); linear, hinted this "
    "round (the linear scan reached a page a hint had put in this round's hint tree: the series "
    "passes it by, an earlier one searched both trees again); linear (any other linear visit that compared); linear, checksum "
    "changed (stopped at the checksum). µs per visit in cmp_and_merge_page(), of it in hint- and "
    "unstable-tree searches where the kernel keeps unstable_tree_walk() out of line (empty where "
    "it is inlined), and (hinted) finding the page's rmap_item; the visits that merged the page "
    "(with the zero page, a stable or an unstable tree page). Wall time inside ksmd's calls "
    "(waits for a CPU within a visit included); each probe adds a few µs to every call alike: "
    "compare kinds, and take ksmd's CPU from runs without --visit-cost."
)


def visit_rows(modes: dict[str, ModeStats]) -> list[dict[str, str]]:
    """ksmd's visits by kind per mode (modes that timed them)."""

    def us(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    rows = []
    for ms in modes.values():
        for kind, c in (ms.ksmd_visits or {}).items():
            rows.append(
                {
                    "mode": ms.mode,
                    "reps": str(ms.visit_reps),
                    "kind": kind,
                    "visits per rep": f"{c.visits / ms.visit_reps:,.0f}",
                    "merged per rep": f"{c.merges / ms.visit_reps:,.0f}",
                    "µs / visit": us(c.us_per_visit(c.visit_s)),
                    "of it: hint-tree search": us(c.us_per_visit(c.hint_walk_s))
                    if c.hint_walks
                    else "",
                    "of it: unstable-tree search": us(c.us_per_visit(c.unstable_walk_s))
                    if c.unstable_walks
                    else "",
                    "+ rmap_item lookup": us(c.us_per_visit(c.lookup_s)) if c.lookup_s else "",
                }
            )
    return rows


def merge_failure_rows(exp: Experiment, st: ExperimentStats | None = None) -> list[dict[str, str]]:
    """Failed hinted merges by the kernel's cause (hint_pages_failed_<cause>),
    summed over the repetitions that recorded them, per mode; the share of
    hinted merge attempts (merged + failed) that failed. Modes without any
    failed hinted merge recorded (ksm, an unpatched kernel) have no row."""
    st = st or aggregate.summarize(exp)
    rows = []
    for ms in st.modes.values():
        fails = ms.merge_failures
        if not fails or not any(fails.values()):
            continue
        failed = sum(fails.values())
        merged = sum(m.hint_pages_merged for m in ms.runs if m.merge_failures is not None)
        causes = [c for c in MergeFailures.causes() if c in fails]
        causes += [c for c in fails if c not in causes]
        rows.append(
            {"mode": ms.mode, "reps": str(ms.failure_reps)}
            | {c: str(fails[c]) for c in causes}
            | {
                "failed": str(failed),
                "failed / (merged + failed)": f"{failed / (merged + failed):.0%}",
            }
        )
    return rows


def _read_ratio_fmt(v: float) -> str:
    return f"{v:.3f}x"


PARTIAL = "(partial)"


def _partial(text: str, reps: tuple[int, ...]) -> str:
    """A cell whose figure counts a partial repetition, marked so."""
    return f"{text} {PARTIAL}" if text and reps else text


def _reps(reps: tuple[int, ...]) -> str:
    return ", ".join(f"rep {r}" for r in reps)


def read_throughput_rows(st: ExperimentStats) -> list[dict[str, str]]:
    """Real QEMU guests' read throughput per mode (MiB/s, median [interval]
    over the repetitions; all guests and by guest) and its ratio to ksm per
    repetition pair; [] for experiments without workload outcomes (ledger).
    A cell that counts a partial figure (a workload that did not finish, read
    until the run's end) ends in "(partial)"; "partial" lists them by
    repetition, "no figure" the repetitions where a workload has none."""
    reads = {m: ms.guest_reads for m, ms in st.modes.items() if ms.guest_reads is not None}
    guests = dict.fromkeys(g for gr in reads.values() for g in gr.by_guest)
    mib_s = _f(".2f")
    rows = []
    for mode, gr in reads.items():
        if mode == aggregate.BASE:
            vs = _read_ratio_fmt(1.0)
        else:
            vs = cell(gr.vs_ksm, _read_ratio_fmt) if gr.vs_ksm and gr.vs_ksm.interval.n else ""
            vs = _partial(vs, gr.vs_ksm_partial)
        by_rep = {
            r: [g for g, reps in gr.partial_by_guest.items() if r in reps]
            for r in sorted({r for reps in gr.partial_by_guest.values() for r in reps})
        }
        rows.append(
            {"mode": mode, "n": str(st.modes[mode].n)}
            | {"all guests (MiB/s)": _partial(cell(gr.all_guests, mib_s), gr.partial)}
            | {
                f"{g} (MiB/s)": _partial(
                    cell(gr.by_guest.get(g), mib_s), gr.partial_by_guest.get(g, ())
                )
                for g in guests
            }
            | {
                "vs ksm": vs,
                "partial": "; ".join(f"rep {r}: {', '.join(gs)}" for r, gs in by_rep.items()),
                "no figure": _reps(gr.unfinished),
            }
        )
    return rows


_INTERVAL_WORDS = {
    "bootstrap": f"[{CONFIDENCE * 100:.0f} % percentile-bootstrap interval of the median, "
    f"{RESAMPLES} resamples, numpy seed {SEED}] for n >= 3",
    "range": "[min, max] for n = 2",
    "value": "the value alone for n = 1",
}


def read_throughput_note(st: ExperimentStats) -> str:
    """The read-throughput table's caption: what a cell is, which interval it
    shows, and what the ratio charges."""
    kinds = {
        s.interval.kind
        for ms in st.modes.values()
        if (gr := ms.guest_reads) is not None
        for s in (gr.all_guests, *gr.by_guest.values(), *([gr.vs_ksm] if gr.vs_ksm else []))
    }
    which = "; ".join(w for k, w in _INTERVAL_WORDS.items() if k in kinds) or "no values"
    return (
        "Guest read throughput with and without the collector: MiB each guest read from the "
        "shared disk (its block layer) per host second its workload took (command to DONE); "
        "all guests: their MiB over their seconds summed. Cells: the median over the "
        f"repetitions with its interval: {which}. vs ksm: all guests' throughput of a mode's "
        "repetition i over ksm's repetition i (the same guests; the modes alternate in the "
        "plan), then the median [interval] of those ratios. Caveat: ksm++ modes differ from "
        "ksm modes in ksmd's hint scanning (ksmd visits the hinted pages) as well as in the "
        "collector, so the ratio charges both. A paced reader (random, N files/s) reads at its "
        "set pace unless it falls behind (guest I/O); only unpaced readers (tar) measure the "
        "speed. A workload that did not finish by the run's end is partial: what QEMU read for "
        "its guest from the shared disk (QMP block statistics) from its command to the run's "
        f"end, over those seconds; a cell that counts one is marked {PARTIAL} (partial: by "
        "repetition, the guests whose figure is). A repetition in which a workload has neither "
        "figure has no all-guests figure (no figure)."
    )


def interval_note(st: ExperimentStats) -> str:
    """What a cell means, with n."""
    ns = sorted({ms.n for ms in st.modes.values()})
    n = ", ".join(str(x) for x in ns)
    return (
        f"median [{CONFIDENCE * 100:.0f} % bootstrap CI], n={n} repetitions per mode (percentile "
        f"bootstrap of the median, {RESAMPLES} resamples, numpy seed {SEED}; n=2: [min, max]; "
        "n=1: the value). Ratios (vs ksm) per repetition pair (rep i vs ksm's rep i; a ksm++ "
        "mode whose linear twin ran, e.g. ksm++-nosmart and ksm-nosmart, vs the twin's), then "
        "summarized; hint counts: medians."
    )


def steady_note(window_s: float) -> str:
    """What the steady columns mean."""
    return (
        f"Steady state: captured sharing over each repetition's last {window_s:g} s (its last "
        f"half when it ran less than {2 * window_s:g} s), and its trend: the Theil-Sen slope "
        f"of captured sharing in {steady.BIN_S:g} s bins over that window, in fractions of the "
        f"oracle per 10 minutes, [Sen's {steady.CONFIDENCE:.0%} rank interval] for one "
        "repetition, [the median's interval over the repetitions' slopes] for more. "
        f"No downward trend: the interval's upper end is >= 0 or |slope| < {steady.TOLERANCE}."
    )


def pace_note(st: ExperimentStats) -> str:
    """The footnote of the below-pace marker ("" when no repetition was)."""
    if st.paced is None:
        return ""
    return (
        f"{BELOW_PACE} {st.reps_below_pace} of {st.reps_total} repetitions ran below "
        f"{IO_PACE_OK * 100:.0f} % of their guests' set read rate (CPU-bound: the modes ran different "
        "workloads). The medians include them; the table of paced repetitions leaves them out."
    )


EQUAL_CPU_NOTE = (
    "Each hinted mode against each linear mode of its family (ksm++ and ksm++-adaptive: ksm at "
    "any scan rate; ksm++-nosmart: ksm-nosmart; ksm++-advisor: ksm-advisor), same scenario, "
    "machine and test kernel, across the experiments given, by rising linear CPU; shown where "
    "there are two such linear modes or more. Captured sharing hinted / linear: of the medians, "
    "and at the ends (the hinted mode's low end over the linear mode's high end; n = 1: the "
    "values); linear ≈ 0: the linear mode captured less than 0.001. bound: the linear mode "
    "with the least ksmd CPU at or above the hinted mode's (medians). Assuming linear KSM "
    "captures no less when it scans faster, the ratio over the bound is a lower bound of the "
    "ratio at equal ksmd CPU (the collector's CPU is not counted). With no bound, no linear "
    "mode had that much CPU."
)


def _ratio_or_zero(v: float | None) -> str:
    return "linear ≈ 0" if v is None else f"{v:.1f}x"


def equal_cpu_rows(rows: list[EqualCpuRow]) -> list[dict[str, str]]:
    return [
        {
            "scenario": r.hinted.scenario,
            "hinted": f"{r.hinted.mode} ({r.hinted.where})",
            "linear": f"{r.linear.mode} ({r.linear.where})",
            "ksmd CPU (%) hinted": cell(r.hinted.cpu, _f(".1f")),
            "ksmd CPU (%) linear": cell(r.linear.cpu, _f(".1f")),
            "CPU linear / hinted": "" if r.cpu_ratio is None else _ratio_fmt(r.cpu_ratio),
            "captured hinted": cell(r.hinted.captured, _f(".3f")),
            "captured linear": cell(r.linear.captured, _f(".3f")),
            "hinted / linear (medians)": _ratio_or_zero(r.by_medians),
            "hinted / linear (ends)": _ratio_or_zero(r.by_ends),
            "bound": "bound" if r.bound else "",
        }
        for r in rows
    ]


def _rich_table(title: str, rows: list[dict[str, str]]) -> Table:
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(*r.values())
    return table


def _html_table(rows: list[dict[str, str]]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table>{head}{body}</table>"


def terminal_summary(
    exps: list[Experiment], console: Console, stats: list[ExperimentStats] | None = None
) -> None:
    """``stats``: ``aggregate.summarize`` of each experiment, when the caller has them."""
    stats = stats or [aggregate.summarize(exp) for exp in exps]
    for exp, st in zip(exps, stats, strict=True):
        title = f"{exp.scenario} ({exp.path})" + ("" if exp.complete else " — PARTIAL RESULTS")
        console.print(_rich_table(title, mode_rows(st.modes)))
        console.print(oracle_note(exp), highlight=False, markup=False)
        if exp.host:
            console.print(hostinfo.describe(exp.host), highlight=False, markup=False)
        if vr := validation_rows(exp):
            console.print(_rich_table(f"{exp.scenario}: merges validated (snapshot oracle)", vr))
        console.print(interval_note(st), highlight=False, markup=False)
        if exp.steady_window_s:
            console.print(steady_note(exp.steady_window_s), highlight=False, markup=False)
        if st.paced is not None:
            console.print(pace_note(st), highlight=False, markup=False)
            console.print(
                _rich_table(
                    f"{exp.scenario}: repetitions at pace only "
                    f"({st.reps_below_pace} of {st.reps_total} left out)",
                    mode_rows(st.paced),
                )
            )
        if exp.repeated or st.paced is not None:
            console.print(_rich_table(f"{exp.scenario}: every repetition", rep_rows(st)))
        if cpu := cpu_rows(exp, st):
            console.print(_rich_table(f"{exp.scenario}: CPU by task (% of one CPU)", cpu))
        console.print(_rich_table(f"{exp.scenario}: ksmd cost", cost_rows(st.modes)))
        console.print(COST_NOTE, highlight=False, markup=False)
        if reads := read_throughput_rows(st):
            console.print(_rich_table(f"{exp.scenario}: guest read throughput", reads))
            console.print(read_throughput_note(st), highlight=False, markup=False)
        if visits := visit_rows(st.modes):
            console.print(_rich_table(f"{exp.scenario}: ksmd visits by kind", visits))
            console.print(VISIT_NOTE, highlight=False, markup=False)
        if hv := hint_visit_rows(exp, st):
            console.print(_rich_table(f"{exp.scenario}: hinted visits", hv))
        for group in aggregate.COUNTER_GROUPS:
            if rows := counter_rows(st, group):
                console.print(_rich_table(f"{exp.scenario}: {group.title.lower()}", rows))
        if mf := merge_failure_rows(exp, st):
            console.print(_rich_table(f"{exp.scenario}: failed hinted merges by cause", mf))
    if eq := equalcpu.compare(stats):
        console.print(_rich_table("hinted against linear KSM by ksmd CPU", equal_cpu_rows(eq)))
        console.print(EQUAL_CPU_NOTE, highlight=False, markup=False)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def write(exps: list[Experiment], outdir: Path, stats: list[ExperimentStats] | None = None) -> Path:
    """``stats``: ``aggregate.summarize`` of each experiment, when the caller has them."""
    outdir.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pyksm merge report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child{text-align:left}img{max-width:100%}"
        ".partial,.pace{color:#b00}.note{font-size:90%;color:#444}</style></head><body>"
        "<h1>pyksm merge report</h1>",
        "<p>KSM vs KSM++ against the oracle (pages that could have been shared at each "
        "moment). Captured sharing = ∫pages_sharing dt / ∫oracle dt; t50/t90 = the time from "
        "which on pages_sharing stays at or above 50 %/90 % of the oracle at each moment.</p>",
    ]
    stats = stats or [aggregate.summarize(exp) for exp in exps]
    for name, exp, st in zip(_png_names(exps), exps, stats, strict=True):
        merge = figures.merge_figure(exp, outdir / f"{name}-merges.png")
        life = figures.lifetime_figure(exp, outdir / f"{name}-lifetimes.png")
        window = exp.steady_window_s
        steady_png = (
            figures.steady_figure(exp, outdir / f"{name}-steady.png", window) if window else None
        )
        parts.append(f"<h2>{html.escape(exp.scenario)}</h2>")
        if not exp.complete:
            parts.append(
                "<p class='partial'>PARTIAL: the run did not finish; figures show "
                "the samples that were kept.</p>"
            )
        desc = exp.config.get("scenario", {}).get("description", "")
        parts.append(f"<p>{html.escape(str(desc))}</p>")
        parts.append(_html_table(mode_rows(st.modes)))
        parts.append(f"<p class='note'>{html.escape(oracle_note(exp))}</p>")
        if exp.host:
            parts.append(f"<p class='note'>{html.escape(hostinfo.describe(exp.host))}</p>")
        if vr := validation_rows(exp):
            parts.append("<h3>Merges validated (snapshot oracle)</h3>" + _html_table(vr))
        parts.append(f"<p class='note'>{html.escape(interval_note(st))}</p>")
        if window:
            parts.append(f"<p class='note'>{html.escape(steady_note(window))}</p>")
        if st.paced is not None:
            parts.append(f"<p class='pace'>{html.escape(pace_note(st))}</p>")
            parts.append(
                f"<h3>Repetitions at pace only ({st.reps_below_pace} of {st.reps_total} "
                "left out)</h3>" + _html_table(mode_rows(st.paced))
            )
        if exp.repeated or st.paced is not None:
            parts.append(
                "<h3>Every repetition</h3><p class='note'>In the order they ran (run); vs ksm: "
                "over the repetition of the same number of ksm (or of the mode's linear twin, "
                "see above); idle/steal: share of all CPUs' "
                f"time over the run; {BELOW_PACE}: below pace.</p>" + _html_table(rep_rows(st))
            )
        if cpu := cpu_rows(exp, st):
            parts.append("<h3>CPU by task (% of one CPU)</h3>" + _html_table(cpu))
        parts.append(
            f"<h3>ksmd cost</h3><p class='note'>{html.escape(COST_NOTE)}</p>"
            + _html_table(cost_rows(st.modes))
        )
        if reads := read_throughput_rows(st):
            parts.append(
                "<h3>Guest read throughput</h3>"
                f"<p class='note'>{html.escape(read_throughput_note(st))}</p>" + _html_table(reads)
            )
        if visits := visit_rows(st.modes):
            parts.append(
                f"<h3>ksmd visits by kind</h3><p class='note'>{html.escape(VISIT_NOTE)}</p>"
                + _html_table(visits)
            )
        if hv := hint_visit_rows(exp, st):
            parts.append(
                "<h3>Hinted visits</h3><p>Summed over the repetitions. merged: stable/pair; "
                "first: no copy elsewhere visited yet in this round; missed: not merged "
                "although a copy elsewhere was visited before in this round and still held the "
                "content; failed: an identical page was found but the merge failed.</p>"
                + _html_table(hv)
            )
        for group in aggregate.COUNTER_GROUPS:
            if rows := counter_rows(st, group):
                parts.append(
                    f"<h3>{html.escape(group.title)}</h3>"
                    f"<p class='note'>{html.escape(group.note)}</p>" + _html_table(rows)
                )
        if mf := merge_failure_rows(exp, st):
            parts.append(
                "<h3>Failed hinted merges by cause</h3><p>Summed over the repetitions: hinted "
                "visits that found a partner but could not merge, by the kernel's counters "
                "hint_pages_failed_*. unmapped: a page left its PTE (unmapped, remapped, vma "
                "gone); locked: folio lock busy; split: large folio not split; lru: an extra "
                "reference while off the LRU (a per-CPU LRU batch, isolation); refs: an extra "
                "reference on an LRU page (GUP, O_DIRECT, a pin); changed: written between the "
                "comparison and the write protection; nomem: no stable tree node.</p>"
                + _html_table(mf)
            )
        parts.append(_img(merge))
        if steady_png is not None:
            parts.append(_img(steady_png))
        parts.append(_img(life))
        cfg = {k: v for k, v in exp.config.items() if k != "ksm_knobs_before"}
        parts.append(
            "<details><summary>configuration</summary><pre>"
            + html.escape(json.dumps(cfg, indent=1))
            + "</pre></details>"
        )
    if eq := equalcpu.compare(stats):
        parts.append(
            "<h2>Hinted against linear KSM by ksmd CPU</h2>"
            f"<p class='note'>{html.escape(EQUAL_CPU_NOTE)}</p>" + _html_table(equal_cpu_rows(eq))
        )
        # Only the modes the table compares (not other machines' or families').
        shown = list(dict.fromkeys(p for r in eq for p in (r.hinted, r.linear)))
        for scenario in dict.fromkeys(r.hinted.scenario for r in eq):
            png = figures.cpu_sharing_figure(
                shown, scenario, outdir / f"{scenario}-cpu-sharing.png"
            )
            parts.append(_img(png))
    parts.append("</body></html>")
    index = no_special_file(outdir / "index.html")
    index.write_text("\n".join(parts))
    doc = aggregate.metrics_json(stats)
    doc["equal_cpu"] = [r.to_json() for r in eq]
    no_special_file(outdir / "metrics.json").write_text(json.dumps(doc, indent=1, allow_nan=False))
    return index


def _png_names(exps: list[Experiment]) -> list[str]:
    """File name stems of each experiment's PNGs: its scenario, numbered from
    the second experiment of the same scenario on (-2, -3, ...)."""
    seen: dict[str, int] = {}
    names = []
    for exp in exps:
        seen[exp.scenario] = seen.get(exp.scenario, 0) + 1
        k = seen[exp.scenario]
        names.append(exp.scenario if k == 1 else f"{exp.scenario}-{k}")
    return names

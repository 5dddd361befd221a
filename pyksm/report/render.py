"""``pyksm report RESULTS…``: PNGs, one self-contained HTML file and a rich
terminal summary for one or more experiments."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyksm.report import figures, metrics
from pyksm.report.dataset import Experiment


def _fmt_t(v: float | None) -> str:
    return "never" if v is None else f"{v:.0f} s"


def _ratio(value: float, base: float | None) -> str:
    """value / base; a base below 0.001 of the oracle (KSM merged next to
    nothing) makes the quotient meaningless."""
    if base is None:
        return ""
    if base < 1e-3:
        return "ksm ≈ 0" if value >= 1e-3 else "—"
    return f"{value / base:.2f}x"


def metric_rows(exp: Experiment) -> list[dict[str, str]]:
    ms = {m: metrics.compute(r) for m, r in exp.runs.items()}
    base = ms.get("ksm")
    rows = []
    for mode, m in ms.items():
        rows.append(
            {
                "mode": mode,
                "captured sharing": f"{m.captured:.3f}",
                "vs ksm": _ratio(m.captured, base.captured if base else None),
                "t50": _fmt_t(m.t50),
                "t90": _fmt_t(m.t90),
                "mean saved / oracle (MiB)": f"{m.mean_sharing * 4 / 1024:.0f} / {m.mean_oracle * 4 / 1024:.0f}",
                "ksmd CPU": f"{m.ksmd_cpu_pct:.1f} %",
                "CPU vs ksm": f"{m.ksmd_cpu_pct / base.ksmd_cpu_pct:.2f}"
                if base and base.ksmd_cpu_pct
                else "",
                "ksmd µs/page": f"{m.ksmd_us_per_page:.1f}",
                "hints rcvd / pages / merged": f"{m.hints_received} / {m.hint_pages_scanned} / {m.hint_pages_merged}",
                "guest I/O": "" if m.io_achieved is None else f"{m.io_achieved:.0%}",
            }
        )
    return rows


CPU_TASKS = ("ksmd", "guests", "collector", "runner", "idle")


def cpu_rows(exp: Experiment) -> list[dict[str, str]]:
    """Where the CPUs went in each mode, in % of one CPU."""
    rows = []
    for mode, run in exp.runs.items():
        by = metrics.compute(run).cpu_by_task
        if by:
            rows.append(
                {"mode": mode} | {t: f"{by[t]:.0f} %" if t in by else "" for t in CPU_TASKS}
            )
    return rows


HINT_CLASSES = ("merged", "first", "missed", "failed", "other")


def hint_visit_rows(exp: Experiment) -> list[dict[str, str]]:
    """Hinted visits by class (runs with --trace-hints; see
    pyksm.experiment.hintpairs): of the visits that could have paired with a
    copy visited before, the share the unstable-tree search missed."""
    rows = []
    for mode, run in exp.runs.items():
        hv = run.summary.hint_visits if run.summary else None
        if not hv:
            continue
        second = hv.get("missed", 0) + hv.get("merged", 0)
        rows.append(
            {"mode": mode}
            | {c: str(hv.get(c, 0)) for c in HINT_CLASSES}
            | {
                "missed / (missed + merged)": f"{hv.get('missed', 0) / second:.0%}"
                if second
                else "",
                "lost events": str(hv.get("lost", 0)),
            }
        )
    return rows


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


def terminal_summary(exps: list[Experiment], console: Console) -> None:
    for exp in exps:
        title = f"{exp.scenario} ({exp.path})" + ("" if exp.complete else " — PARTIAL RESULTS")
        console.print(_rich_table(title, metric_rows(exp)))
        if cpu := cpu_rows(exp):
            console.print(_rich_table(f"{exp.scenario}: CPU by task (% of one CPU)", cpu))
        if hv := hint_visit_rows(exp):
            console.print(_rich_table(f"{exp.scenario}: hinted visits", hv))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def write(exps: list[Experiment], outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pyksm merge report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child{text-align:left}img{max-width:100%}"
        ".partial{color:#b00}</style></head><body><h1>pyksm merge report</h1>",
        "<p>KSM vs KSM++ against the oracle (pages that could have been shared at each "
        "moment). Captured sharing = ∫pages_sharing dt / ∫oracle dt; t50/t90 = the time from "
        "which on pages_sharing stays at or above 50 %/90 % of the oracle at each moment.</p>",
    ]
    for exp in exps:
        merge = figures.merge_figure(exp, outdir / f"{exp.scenario}-merges.png")
        life = figures.lifetime_figure(exp, outdir / f"{exp.scenario}-lifetimes.png")
        rows = metric_rows(exp)
        parts.append(f"<h2>{html.escape(exp.scenario)}</h2>")
        if not exp.complete:
            parts.append(
                "<p class='partial'>PARTIAL: the run did not finish; figures show "
                "the samples that were kept.</p>"
            )
        desc = exp.config.get("scenario", {}).get("description", "")
        parts.append(f"<p>{html.escape(str(desc))}</p>")
        parts.append(_html_table(rows))
        if cpu := cpu_rows(exp):
            parts.append("<h3>CPU by task (% of one CPU)</h3>" + _html_table(cpu))
        if hv := hint_visit_rows(exp):
            parts.append(
                "<h3>Hinted visits</h3><p>merged: stable/pair; first: no copy elsewhere "
                "visited yet in this round; missed: not merged although a copy elsewhere "
                "was visited before in this round and still held the content; failed: an "
                "identical page was found but the merge failed.</p>" + _html_table(hv)
            )
        parts.append(_img(merge))
        parts.append(_img(life))
        cfg = {k: v for k, v in exp.config.items() if k != "ksm_knobs_before"}
        parts.append(
            "<details><summary>configuration</summary><pre>"
            + html.escape(json.dumps(cfg, indent=1))
            + "</pre></details>"
        )
    parts.append("</body></html>")
    index = outdir / "index.html"
    index.write_text("\n".join(parts))
    (outdir / "metrics.json").write_text(
        json.dumps({e.scenario: metric_rows(e) for e in exps}, indent=1)
    )
    return index

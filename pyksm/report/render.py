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


def metric_rows(exp: Experiment) -> list[dict[str, str]]:
    ms = {m: metrics.compute(r) for m, r in exp.runs.items()}
    base = ms.get("ksm")
    rows = []
    for mode, m in ms.items():
        rows.append(
            {
                "mode": mode,
                "captured sharing": f"{m.captured:.3f}",
                "vs ksm": f"{m.captured / base.captured:.2f}x" if base and base.captured else "",
                "t50": _fmt_t(m.t50),
                "t90": _fmt_t(m.t90),
                "mean saved / oracle (MiB)": f"{m.mean_sharing * 4 / 1024:.0f} / {m.mean_oracle * 4 / 1024:.0f}",
                "ksmd CPU": f"{m.ksmd_cpu_pct:.1f} %",
                "CPU vs ksm": f"{m.ksmd_cpu_pct / base.ksmd_cpu_pct:.2f}"
                if base and base.ksmd_cpu_pct
                else "",
                "hints rcvd / pages / merged": f"{m.hints_received} / {m.hint_pages_scanned} / {m.hint_pages_merged}",
            }
        )
    return rows


def terminal_summary(exps: list[Experiment], console: Console) -> None:
    for exp in exps:
        rows = metric_rows(exp)
        title = f"{exp.scenario} ({exp.path})" + ("" if exp.complete else " — PARTIAL RESULTS")
        table = Table(title=title)
        for col in rows[0]:
            table.add_column(col, justify="left" if col == "mode" else "right")
        for r in rows:
            table.add_row(*r.values())
        console.print(table)


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
        "moment). Captured sharing = ∫pages_sharing dt / ∫oracle dt; t50/t90 = first time "
        "pages_sharing reached 50 %/90 % of the oracle at that moment.</p>",
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
        parts.append(
            "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>"
        )
        for r in rows:
            parts.append(
                "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>"
            )
        parts.append("</table>")
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

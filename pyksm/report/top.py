"""``pyksm top``: live KSM state, per-process savings and hint rates.

Reads /sys/kernel/mm/ksm and /proc/PID/ksm_stat every INTERVAL seconds and
shows a table; ``--prometheus FILE`` also writes the node-exporter textfile
format (written to FILE.tmp, then renamed, so a scraper never reads half).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pyksm.kernel import ksm

# Global values that only grow: exported as counters, shown as rates.
COUNTERS = ksm.MONOTONIC
RATES = ("pages_scanned", "hints_received", "hint_pages_scanned", "hint_pages_merged")
PROC_FIELDS = ("ksm_merging_pages", "ksm_process_profit", "ksm_rmap_items", "ksm_zero_pages")


@dataclass
class Sample:
    t: float
    ksm: dict[str, int]
    procs: dict[int, dict[str, int | str]] = field(default_factory=dict)


def _proc_stats(proc: Path) -> dict[int, dict[str, int | str]]:
    out: dict[int, dict[str, int | str]] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = ksm.process_stat(int(d.name))
            comm = (d / "comm").read_text().strip()
        except Exception:
            continue
        # ksm_mergeable (newer kernels, not 6.12): the mm is registered with
        # KSM; without it, a process shows up once ksmd has scanned it.
        if stat.get("ksm_mergeable") == "yes" or int(stat.get("ksm_rmap_items", 0)):
            out[int(d.name)] = {"comm": comm, **stat}
    return out


def sample(k: ksm.Ksm, proc: Path = Path("/proc")) -> Sample:
    values = {n: v for n, v in k.state().items() if isinstance(v, int)}
    return Sample(time.monotonic(), values, _proc_stats(proc))


def rates(prev: Sample | None, cur: Sample) -> dict[str, float]:
    if prev is None or cur.t <= prev.t:
        return {}
    dt = cur.t - prev.t
    return {n: (cur.ksm.get(n, 0) - prev.ksm.get(n, 0)) / dt for n in RATES if n in cur.ksm}


def prometheus(cur: Sample, rate: dict[str, float]) -> str:
    lines = []
    for name, value in sorted(cur.ksm.items()):
        metric = f"pyksm_ksm_{name}"
        kind = "counter" if name in COUNTERS else "gauge"
        knob = ksm.KNOBS.get(name)
        lines += [
            f"# HELP {metric} /sys/kernel/mm/ksm/{name}" + (f": {knob.doc}" if knob else ""),
            f"# TYPE {metric} {kind}",
            f"{metric} {value}",
        ]
    for name in PROC_FIELDS:
        metric = f"pyksm_process_{name}"
        lines += [f"# HELP {metric} /proc/PID/ksm_stat {name}", f"# TYPE {metric} gauge"]
        for pid, st in sorted(cur.procs.items()):
            if name in st:
                comm = str(st["comm"]).replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{metric}{{pid="{pid}",comm="{comm}"}} {st[name]}')
    for name, per_s in sorted(rate.items()):
        metric = f"pyksm_rate_{name}_per_second"
        lines += [f"# TYPE {metric} gauge", f"{metric} {per_s:.3f}"]
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def table(cur: Sample, rate: dict[str, float]) -> Table:
    g = cur.ksm
    t = Table(
        title=f"KSM: saving {g.get('pages_sharing', 0) * 4 // 1024} MiB "
        f"(pages_sharing {g.get('pages_sharing', 0)}, shared {g.get('pages_shared', 0)}), "
        f"full scans {g.get('full_scans', 0)}, "
        f"scan {rate.get('pages_scanned', 0):.0f} pages/s"
        + (
            f", hints {rate.get('hints_received', 0):.0f}/s → merged "
            f"{rate.get('hint_pages_merged', 0):.0f} pages/s"
            if "hints_received" in g
            else ""
        )
    )
    for col in ("pid", "comm", "merging pages", "profit (MiB)", "rmap items"):
        t.add_column(col, justify="left" if col == "comm" else "right")
    for pid, st in sorted(cur.procs.items(), key=lambda x: -int(x[1].get("ksm_merging_pages", 0))):
        t.add_row(
            str(pid),
            str(st["comm"]),
            str(st.get("ksm_merging_pages", 0)),
            f"{int(st.get('ksm_process_profit', 0)) / 2**20:.1f}",
            str(st.get("ksm_rmap_items", "")),
        )
    return t


def run(
    interval: float, count: int | None, prom: Path | None, console: Console, once: bool = False
) -> None:
    k = ksm.Ksm()
    prev: Sample | None = None
    n = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while count is None or n < count:
            cur = sample(k)
            r = rates(prev, cur)
            live.update(table(cur, r), refresh=True)
            if prom:
                write_textfile(prom, prometheus(cur, r))
            prev, n = cur, n + 1
            if once or (count is not None and n >= count):
                break
            time.sleep(interval)

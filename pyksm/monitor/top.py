"""``pyksm top``: live KSM state, per-process savings and hint rates.

Reads /sys/kernel/mm/ksm and /proc/PID/ksm_stat every INTERVAL seconds and
shows a table. The same sample is exported in the Prometheus format
(``prometheus_client``): ``--prometheus FILE`` writes it for node_exporter's
textfile collector, ``--listen ADDR:PORT`` serves it over HTTP. Stock KSM
values are ``pyksm_ksmd_*`` (node_exporter's ksmd names under pyksm's prefix),
KSM++ hint values ``pyksm_hints_*``, per-process values ``pyksm_process_*``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from pyksm.errors import PyksmError
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
        except (PyksmError, OSError, ValueError):
            continue  # gone since the listing, or no KSM stats: not a KSM process
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


# node_exporter's ksmd collector reads these files; pyksm exports them under
# the same names with its own prefix (node_ksmd_X -> pyksm_ksmd_X), so both
# can be scraped and dashboards map one to one.
NODE_EXPORTER_KSMD = (
    "full_scans",
    "merge_across_nodes",
    "pages_shared",
    "pages_sharing",
    "pages_to_scan",
    "pages_unshared",
    "pages_volatile",
    "run",
    "sleep_millisecs",
)


def metric_name(knob: str) -> str:
    """The exported name of a KSM sysfs value (counters get ``_total`` on exposition)."""
    if knob in ksm.HINT_KNOBS:
        return "pyksm_hints_" + knob.removeprefix("hints_").removeprefix("hint_")
    if knob == "sleep_millisecs":
        return "pyksm_ksmd_sleep_seconds"  # as node_exporter: seconds, not ms
    return f"pyksm_ksmd_{knob}"


class KsmCollector(Collector):
    """The latest Sample as Prometheus metric families (HELP and TYPE from KNOBS)."""

    def __init__(self) -> None:
        self.sample: Sample | None = None
        self.rates: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        cur = self.sample
        if cur is None:
            return
        for name, value in sorted(cur.ksm.items()):
            knob = ksm.KNOBS.get(name)
            doc = f"/sys/kernel/mm/ksm/{name}" + (f": {knob.doc}" if knob else "")
            metric = metric_name(name)
            if name in COUNTERS:
                yield CounterMetricFamily(metric, doc, value=value)
            elif name == "sleep_millisecs":
                yield GaugeMetricFamily(metric, doc + " (in seconds)", value=value / 1000)
            else:
                yield GaugeMetricFamily(metric, doc, value=value)
        for name in PROC_FIELDS:
            fam = GaugeMetricFamily(
                f"pyksm_process_{name}", f"/proc/PID/ksm_stat {name}", labels=("pid", "comm")
            )
            for pid, st in sorted(cur.procs.items()):
                if name in st:
                    fam.add_metric((str(pid), str(st["comm"])), float(st[name]))
            yield fam
        for name, per_s in sorted(self.rates.items()):
            yield GaugeMetricFamily(
                f"pyksm_rate_{name}_per_second", f"ksm/{name} per second", value=per_s
            )


def registry(cur: Sample, rate: dict[str, float]) -> tuple[CollectorRegistry, KsmCollector]:
    reg = CollectorRegistry(auto_describe=False)
    col = KsmCollector()
    col.sample, col.rates = cur, rate
    reg.register(col)
    return reg, col


def prometheus(cur: Sample, rate: dict[str, float]) -> str:
    """The Prometheus text exposition of one sample."""
    return generate_latest(registry(cur, rate)[0]).decode()


def write_textfile(path: Path, text: str) -> None:
    """Write FILE.tmp then rename: a textfile collector never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise PyksmError(f"cannot write {path}: {e.strerror}") from None


def serve(listen: tuple[str, int], col: KsmCollector) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``col``'s metrics over HTTP on ADDR:PORT (``/metrics``, or any path)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(col)
    host, port = listen
    try:
        return start_http_server(port, addr=host, registry=reg)
    except OSError as e:
        raise PyksmError(f"cannot listen on {host}:{port}: {e.strerror}") from None


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
            escape(str(st["comm"])),
            str(st.get("ksm_merging_pages", 0)),
            f"{int(st.get('ksm_process_profit', 0)) / 2**20:.1f}",
            str(st.get("ksm_rmap_items", "")),
        )
    return t


def run(
    interval: float,
    count: int | None,
    prom: Path | None,
    console: Console,
    once: bool = False,
    listen: tuple[str, int] | None = None,
) -> None:
    k = ksm.Ksm()
    prev: Sample | None = None
    n = 0
    col = KsmCollector()
    with contextlib.ExitStack() as stack:
        if listen is not None:
            server, thread = serve(listen, col)
            stack.callback(server.server_close)
            stack.callback(thread.join, 5)
            stack.callback(server.shutdown)
            host, port = listen[0], server.server_port
            console.print(f"serving metrics on http://{host}:{port}/metrics", highlight=False)
        live = stack.enter_context(Live(console=console, auto_refresh=False, transient=False))
        while count is None or n < count:
            cur = sample(k)
            r = rates(prev, cur)
            col.sample, col.rates = cur, r
            live.update(table(cur, r), refresh=True)
            if prom:
                write_textfile(prom, prometheus(cur, r))
            prev, n = cur, n + 1
            if once or (count is not None and n >= count):
                break
            time.sleep(interval)

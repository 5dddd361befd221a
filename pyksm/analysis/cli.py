"""Command-line subcommands of pyksm.analysis (registered by pyksm.cli).

pyksm snapshot -p PID [-p PID ...] [-i 1] [-n 60] [--select mergeable|anon|all] [--raw] -o run.npz
pyksm analyze run.npz [--hints TRACE] [--json] [-o report.json]
pyksm simulate run.npz [--hints TRACE] [--pages-to-scan N] [--sleep-ms MS] [--order linear|random]
               [--smart-scan] [--hint-capacity N] [--interleave H:L] [--sweep NAME=V1,V2 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from pyksm import argtypes
from pyksm.errors import PyksmError
from pyksm.terminal import err, escape, out

EXAMPLES = """examples:
  pyksm snapshot -p $(pidof qemu-system-x86_64) -i 1 -n 120 -o vm.npz
  pyksm analyze vm.npz --hints reads.trace
  pyksm simulate vm.npz --hints reads.trace --hint-capacity 4096 --interleave 1:1
  pyksm simulate vm.npz --sweep pages_to_scan=100,1000 --sweep hint_capacity=0,4096 --json
"""


def _load_hints(path: str | None, meta: dict[str, Any]) -> Any:
    from pyksm.analysis import hinttrace

    if not path:
        return None
    t0 = meta.get("t0_monotonic")
    return hinttrace.load(Path(path), float(t0) if t0 is not None else None)


def _write_json(doc: dict[str, Any], dest: str | None) -> None:
    text = json.dumps(doc, indent=2, default=float) + "\n"
    if dest:
        try:
            Path(dest).write_text(text)
        except OSError as e:
            raise PyksmError(f"cannot write {dest}: {e.strerror}") from None
        err.print(f"wrote {escape(str(dest))}")
    else:
        sys.stdout.write(text)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from pyksm.analysis import snapshot, storage

    def progress(i: int, seconds: float, pages: int) -> None:
        err.print(f"snapshot {i + 1}/{args.count}: {pages} pages in {seconds:.2f} s")

    series = snapshot.capture(
        args.pid, args.interval, args.count, args.select, args.raw, progress=progress
    )
    path = storage.save(series, Path(args.output), compress=args.compress)
    err.print(f"{series.count} snapshots, {series.pages} pages -> {escape(str(path))}")
    err.print(f"next: pyksm analyze {escape(str(path))}")
    return 0


def analyze_doc(series: Any, hints: Any) -> dict[str, Any]:
    from pyksm.analysis import oracle, validate
    from pyksm.analysis.series import Flag

    if hints is not None:
        oracle.mark_hinted(series, hints)
    ksm_known = bool(np.any(series.flags & Flag.KSM)) and not np.any(
        ((series.flags & Flag.KSM) != 0) & (series.pfn == 0)
    )
    rows = validate.validate(series) if ksm_known else oracle.per_snapshot(series)
    lt = oracle.lifetimes(series)
    doc: dict[str, Any] = {
        "snapshots": series.count,
        "pages": series.pages,
        "meta": {k: v for k, v in series.meta.items() if k != "capture_seconds"},
        "rows": rows,
        "lifetimes": {
            "episodes": len(lt),
            "censored": int(lt.censored.sum()),
            "seed_bins": oracle.histogram(lt),
            "seed_bins_uncensored": oracle.histogram(lt, include_censored=False),
            "fine_bins": oracle.histogram(lt, oracle.FINE_BINS),
        },
    }
    if ksm_known and rows:
        doc["validation"] = {
            "final_recall": rows[-1]["recall"],
            "min_precision": min(r["precision"] for r in rows),
            "wrong_pages": sum(int(r["wrong"]) for r in rows),
            "changed_at_merge": sum(int(r["changed_at_merge"]) for r in rows),
        }
    return doc


def cmd_analyze(args: argparse.Namespace) -> int:
    from pyksm.analysis import storage

    series = storage.load(Path(args.file))
    doc = analyze_doc(series, _load_hints(args.hints, series.meta))
    if args.json or args.output:
        _write_json(doc, args.output)
        if args.json:
            return 0
    rows = doc["rows"]
    table = Table(
        title=f"{escape(str(args.file))}: {doc['snapshots']} snapshots, {doc['pages']} pages"
    )
    cols = ["time", "present", "zero_pages", "opportunities", "opp_file", "opp_hinted"]
    if "validation" in doc:
        cols += ["kernel_sharing", "recall", "precision"]
    for c in cols:
        table.add_column(c, justify="right")
    step = max(1, len(rows) // 20)
    for r in rows[::step]:
        table.add_row(*(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    out.print(table)
    lt = doc["lifetimes"]
    out.print(
        f"opportunity lifetimes ({lt['episodes']} episodes, {lt['censored']} censored): "
        + ", ".join(f"{k}: {v}" for k, v in lt["seed_bins"].items())
    )
    out.print("finer: " + ", ".join(f"{k}: {v}" for k, v in lt["fine_bins"].items() if v))
    if "validation" in doc:
        v = doc["validation"]
        out.print(
            f"kernel merges: final recall {v['final_recall']:.3f}, precision "
            f"{v['min_precision']:.6f} ({v['wrong_pages']} wrong pages)"
        )
    return 0


def sweep_item(item: str) -> tuple[str, list[Any]]:
    """NAME=V1,V2,... for a ScanParams field, each value checked as a single run's."""
    from pyksm.analysis.simulator import ScanParams

    fields = ScanParams.__dataclass_fields__
    name, sep, values = item.partition("=")
    if not sep or name not in fields:
        raise PyksmError(f"--sweep wants NAME=V1,V2 with NAME one of {', '.join(fields)}")
    parsed = [_convert(name, v) for v in values.split(",")]
    for value in parsed:
        ScanParams(**{name: value}).check()
    return name, parsed


def _convert(name: str, text: str) -> Any:
    try:
        if name == "interleave":
            h, _, low = text.partition(":")
            return (int(h), int(low or 1))
        if name in ("order", "hint_order"):
            return text
        if name in ("smart_scan", "hint_skip_volatility"):
            return text.lower() in ("1", "true", "yes", "on")
        if name in ("sleep_ms", "hint_max_age_ms", "start", "adapt_period_ms"):
            return float(text)
        return int(text)
    except ValueError:
        raise PyksmError(f"bad value {text!r} for {name}") from None


def interleave(text: str) -> tuple[int, int]:
    """H:L, hint steps to linear steps per batch; not both 0."""
    h, low = _convert("interleave", text)
    if h < 0 or low < 0 or h + low == 0:
        raise PyksmError(f"interleave {text!r}: H and L are 0 or more, not both 0")
    return int(h), int(low)


def cmd_simulate(args: argparse.Namespace) -> int:
    from pyksm.analysis import dedup, simulator, storage
    from pyksm.analysis.series import Flag

    series = storage.load(Path(args.file))
    hints = _load_hints(args.hints, series.meta)
    base = simulator.ScanParams(
        pages_to_scan=args.pages_to_scan,
        sleep_ms=args.sleep_ms,
        order=args.order,
        smart_scan=args.smart_scan,
        hint_capacity=args.hint_capacity,
        interleave=args.interleave,
        hint_max_age_ms=args.hint_max_age_ms,
        hint_order=args.hint_order,
        start=args.start if args.start is not None else series.meta.get("ksm_start"),
    )
    inp = simulator.SimInput.from_series(series, hints)
    rate = simulator.observed_rate(series) if args.observed_rate else None
    grid = dict(args.sweep or [])
    results = (
        simulator.sweep(inp, base, grid, rate=rate)
        if grid
        else [simulator.simulate(inp, base, rate=rate)]
    )
    possible = []
    for i in range(series.count):
        sl = series.span(i)
        st = dedup.group_stats(series.hash[sl], (series.flags[sl] & Flag.ZERO) != 0)
        possible.append(st.total_opportunities)
    kernel = [k.get("pages_sharing") for k in series.ksm] if series.ksm else []
    docs = []
    for r in results:
        d = r.summary()
        d["pages_sharing"] = r.pages_sharing.tolist()
        if kernel and all(v is not None for v in kernel) and any(kernel):
            d["error_vs_kernel"] = simulator.error_against(r.pages_sharing, np.array(kernel))
        docs.append(d)
    doc = {"times": series.times.tolist(), "possible": possible, "kernel": kernel, "runs": docs}
    if args.json or args.output:
        _write_json(doc, args.output)
        if args.json:
            return 0
    table = Table(
        title=f"{escape(str(args.file))}: simulated pages_sharing (possible at end: {possible[-1]})"
    )
    names = list(grid) or ["pages_to_scan", "hint_capacity"]
    for c in [*names, "final", "mean", "visits", "hint_visits", "error vs kernel"]:
        table.add_column(c, justify="right")
    for d in docs:
        e = d.get("error_vs_kernel")
        table.add_row(
            *(str(d["params"][n]) for n in names),
            str(d["final_pages_sharing"]),
            f"{d['mean_pages_sharing']:.0f}",
            str(d["visits"]),
            str(d["hint_visits"]),
            f"{e['mae_rel']:.1%}" if e else "",
        )
    out.print(table)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this package's subcommands to the top-level parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser(
        "snapshot",
        help="snapshot processes' pages (hash + flags) at an interval",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    s.add_argument("-p", "--pid", type=argtypes.pid, action="append", required=True)
    s.add_argument(
        "-i", "--interval", type=argtypes.positive_float, default=1.0, help="seconds (default 1)"
    )
    s.add_argument(
        "-n", "--count", type=argtypes.positive_int, default=10, help="snapshots (default 10)"
    )
    s.add_argument(
        "--select",
        default="mergeable",
        choices=("mergeable", "anon", "all"),
        help="which VMAs: MADV_MERGEABLE (default; QEMU guest RAM), anonymous, all readable",
    )
    s.add_argument("--raw", action="store_true", help="keep raw pages (small runs only)")
    s.add_argument("--compress", action="store_true", help="zip-deflate the NPZ")
    s.add_argument("-o", "--output", type=argtypes.output_file, required=True, help="NPZ file")
    s.set_defaults(func=cmd_snapshot)

    a = sub.add_parser(
        "analyze",
        help="oracle, lifetimes and merge validation of a snapshot file",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    a.add_argument("file", type=argtypes.existing_file)
    a.add_argument(
        "--hints",
        type=argtypes.existing_file,
        help="hint trace (collector file, .npz, .jsonl, text)",
    )
    a.add_argument("--json", action="store_true", help="print the report as JSON")
    a.add_argument("-o", "--output", type=argtypes.output_file, help="write the JSON report here")
    a.set_defaults(func=cmd_analyze)

    m = sub.add_parser(
        "simulate",
        help="predict pages_sharing for scanner settings from a snapshot file",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    m.add_argument("file", type=argtypes.existing_file)
    m.add_argument(
        "--hints",
        type=argtypes.existing_file,
        help="hint trace (collector file, .npz, .jsonl, text)",
    )
    m.add_argument("--pages-to-scan", type=argtypes.positive_int, default=100)
    m.add_argument("--sleep-ms", type=argtypes.positive_float, default=20.0)
    m.add_argument("--order", default="linear", choices=("linear", "random"))
    m.add_argument("--smart-scan", action="store_true")
    m.add_argument("--hint-capacity", type=argtypes.nonneg_int, default=0, help="0: plain KSM")
    m.add_argument(
        "--interleave",
        default="1:1",
        type=argtypes.checked(interleave),
        help="H:L hint to linear steps",
    )
    m.add_argument("--hint-max-age-ms", type=argtypes.positive_float, default=120000.0)
    m.add_argument(
        "--hint-order",
        default="lifo",
        choices=("lifo", "fifo"),
        help="which queued hint a hint step takes: the newest (lifo, the kernel's) or the oldest",
    )
    m.add_argument(
        "--start",
        type=argtypes.nonneg_float,
        default=None,
        help="ksmd start (s, series clock; default: meta ksm_start or the first snapshot)",
    )
    m.add_argument(
        "--observed-rate",
        action="store_true",
        help="scan as many pages per interval as the kernel did (ksm/pages_scanned)",
    )
    m.add_argument(
        "--sweep",
        action="append",
        type=argtypes.checked(sweep_item),
        metavar="NAME=V1,V2",
        help="sweep a parameter",
    )
    m.add_argument("--json", action="store_true")
    m.add_argument("-o", "--output", type=argtypes.output_file, help="write the JSON result here")
    m.set_defaults(func=cmd_simulate)

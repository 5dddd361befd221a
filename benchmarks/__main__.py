"""Run every benchmark module (or those named on the command line)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

MODULES = [
    "lab_bench",
    "hints_bench",
    "analysis_bench",
    "collect_bench",
    "qemu_guest_bench",
    "qemu_snapshot_bench",
]
OUT = Path("bench-results")


def main(argv: list[str]) -> int:
    names = argv or MODULES
    OUT.mkdir(exist_ok=True)
    console = Console()
    failed = 0
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        result = mod.run(console)
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        table = Table(title=f"{name} (JSON: {OUT / (name + '.json')})")
        for col in ("metric", "value", "baseline", "ratio", "goal", "met"):
            table.add_column(col)
        for m in result["metrics"]:
            met = m.get("met")
            failed += met is False
            table.add_row(
                m["name"],
                f"{m['value']:.3g} {m['unit']}",
                f"{m['baseline']:.3g} {m['unit']}" if m.get("baseline") is not None else "",
                f"{m['ratio']:.3f}" if m.get("ratio") is not None else "",
                m.get("goal", ""),
                {True: "yes", False: "NO", None: ""}[met],
            )
        console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

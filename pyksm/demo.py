"""``make demo`` / ``pyksm demo``: build the test kernel (cached), boot it, show what it has.

A later stage turns this into the full KSM vs KSM++ merge report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import vm


def run(outdir: Path, out: Console, err: Console) -> int:
    kernel = kbuild.build(kbuild.BuildRequest(), err)
    err.print(f"booting {kernel.release} ({kernel.bzimage})")
    result = vm.run(
        vm.VmRequest(
            bzimage=kernel.bzimage,
            command=[sys.executable, "-m", "pyksm.lab.facts"],
            outdir=outdir,
            timeout=300,
        )
    )
    if not result.ok:
        from pyksm.cli import report_vm_result

        return report_vm_result(result)
    line = next(
        (ln for ln in result.output_log.read_text().splitlines() if ln.startswith("PYKSM-FACTS ")),
        None,
    )
    if line is None:
        raise PyksmError(f"the guest printed no facts; see {result.output_log}")
    facts = json.loads(line.split(" ", 1)[1])
    table = Table(title=f"test kernel {facts['release']} ({result.accel}, {result.seconds:.1f} s)")
    table.add_column("what")
    table.add_column("found")
    table.add_row(
        "kernel build", f"{kernel.name} key {kernel.key}, series: {len(kernel.series)} patches"
    )
    table.add_row("cpus / memory", f"{facts['cpus']} / {facts['mem_total_kib'] // 1024} MiB")
    table.add_row("NUMA nodes", ", ".join(facts["numa_nodes"]))
    table.add_row(
        "BTF / kheaders / kprobes", f"{facts['btf']} / {facts['kheaders']} / {facts['kprobes']}"
    )
    table.add_row(
        "KSM++ hints (sysfs / debugfs)", f"{facts['ksm_hints']} / {facts['debugfs_hints']}"
    )
    for k, v in facts["ksm_sysfs"].items():
        table.add_row(f"ksm/{k}", str(v))
    out.print(table)
    return 0

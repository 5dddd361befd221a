"""kernel-build's shape in the simulator: newest-first vs oldest-first hints,
fixed 1:1 and 4:1 against the adaptive interleave, at three ksmd budgets.

    .venv/bin/python docs/results/2026-12-01-night/model_kernel_build.py

Two guests read the same 49,152 pages at 1,024 pages/s each, guest B 3 s
behind, beside 163,840 unique pages; one hint per 140 pages read (as the
collector's records in the kernel runs: 98,304 pages in 702 hints); smart scan
on, 4096 hint records. ksmd's budget is given in steps a second: 1,800 is what
it managed in the kernel runs of this session while the guests read (TCG),
5,000 the nominal 100 pages / 20 ms.
"""

from dataclasses import replace

from pyksm.analysis.simulator import ScanParams, simulate
from pyksm.analysis.synthetic import LaggedReaders, lagged_readers, oracle
from pyksm.report.metrics import captured, reach_time

shape = LaggedReaders()
inp = lagged_readers(shape)
orc = oracle(shape, inp.times)


def when(sharing, frac):  # the report's t50 / t90 (pyksm.report.metrics)
    t = reach_time(inp.times, sharing, orc, frac)
    return "never" if t is None else f"{t:.0f}"


print("| steps/s | hint order | interleave | captured sharing | t50 (s) | t90 (s) | shared at 50 s |")
print("|---|---|---|---|---|---|---|")
for steps in (1800, 2500, 5000):
    base = ScanParams(
        pages_to_scan=steps // 50, sleep_ms=20.0, start=0.0, hint_capacity=4096, smart_scan=True
    )
    for order in ("lifo", "fifo"):
        for label, p in (
            ("1:1", base),
            ("4:1", replace(base, interleave=(4, 1))),
            ("adaptive", replace(base, adaptive_interleave=True)),
        ):
            r = simulate(inp, replace(p, hint_order=order))
            cap = captured(inp.times, r.pages_sharing, orc)
            print(
                f"| {steps} | {order} | {label} | {cap:.3f} | {when(r.pages_sharing, 0.5)} | "
                f"{when(r.pages_sharing, 0.9)} | {r.pages_sharing[50]:,} |"
            )

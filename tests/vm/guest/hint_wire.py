"""Guest side of test_hints.py: pyksm's record layout and writer against the
real kernel interface, and pyksm.kernel.ksm against the real sysfs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mergeable import PAGE, Region  # the script's own directory is on sys.path

from pyksm.kernel import hints, ksm, wire

k = ksm.Ksm()
out: dict[str, object] = {"hints_supported": k.hints_supported}
state = k.state()
out["missing_knobs"] = [n for n in ksm.HINT_KNOBS if n not in state]
out["capacity"] = state.get("hint_capacity")

region = Region(64)
for i in range(64):
    region.fill(i, bytes([i % 7]) * PAGE)

before = k.read_int("hints_received")
with hints.HintWriter() as w:
    ok = w.send(
        [
            wire.Hint(os.getpid(), region.addr, region.size),
            wire.Hint(os.getpid(), region.addr + PAGE, 3 * PAGE),
        ]
    )
    out["raw_accepted"] = ok
    out["raw_received_delta"] = k.read_int("hints_received") - before

    # A process not under KSM, and one that has exited: rejected, counted.
    sleeper = subprocess.Popen(["sleep", "30"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    inv0 = k.read_int("hints_invalid")
    bad = [wire.Hint(sleeper.pid, 0x400000, PAGE), wire.Hint(gone.pid, 0x400000, PAGE)]
    # A batch mixing good and bad records: the kernel queues up to the first
    # bad one and the write comes back short; the writer skips the bad record.
    rec0 = k.read_int("hints_received")
    good = wire.Hint(os.getpid(), region.addr, PAGE)
    out["mixed_accepted"] = w.send([good, *bad, good])
    out["mixed_received_delta"] = k.read_int("hints_received") - rec0
    out["rejected"] = dict(w.rejected)
    out["invalid_delta_at_least"] = k.read_int("hints_invalid") - inv0

# The same batch through process_madvise(MADV_KSM_HINT) and pidfds.
out["madvise_supported"] = hints.madvise_supported()
with hints.MadviseWriter() as m:
    rec0 = k.read_int("hints_received")
    out["madvise_accepted"] = m.send([good, *bad, good])
    out["madvise_received_delta"] = k.read_int("hints_received") - rec0
    out["madvise_rejected"] = dict(m.rejected)
    # An unaligned range is widened to pages, as the debugfs intake does.
    out["madvise_unaligned"] = m.send([wire.Hint(os.getpid(), region.addr + 100, 10)])
auto = hints.open_intake("auto")
out["auto_intake"] = auto.name
auto.close()
sleeper.kill()

t0 = k.read_int("hints_received")
hints.send_text([f"{os.getpid()} {region.addr:#x} {2 * PAGE}"])
out["text_received_delta"] = k.read_int("hints_received") - t0
# pyksm top's exporter sees the hint counters and this process's KSM state
# (on 6.12, /proc/PID/ksm_stat has no ksm_mergeable: wait for ksmd's rmap items).
from pyksm.deadline import wait_for  # noqa: E402
from pyksm.monitor import top  # noqa: E402

k.write("pages_to_scan", 1000)
k.write("run", 1)
wait_for(
    lambda: ksm.process_stat(os.getpid()).get("ksm_rmap_items"),
    30,
    "ksmd registering this process (ksm_rmap_items)",
    poll=0.2,
)

# The failed hinted merges by cause, read through pyksm from the real sysfs:
# every cause is there, and they count only hinted visits that did not merge.
failures = k.merge_failures()
out["merge_failures"] = failures.as_dict() if failures else None
out["failed_le_unmerged"] = failures is not None and failures.total <= k.read_int(
    "hint_pages_scanned"
) - k.read_int("hint_pages_merged")

prom = top.prometheus(top.sample(k), {})
out["prometheus_has_hints"] = "pyksm_hints_received_total " in prom
out["prometheus_has_self"] = f'pid="{os.getpid()}"' in prom
Path(sys.argv[1]).write_text(json.dumps(out))

"""Guest side of test_collect.py: the live hint pipeline on the KSM++ kernel.

A reader (read_into_mergeable.py) fills MADV_MERGEABLE memory twice with
the same file data through preadv, readv, pread64, read and io_submit while
`pyksm collect -p PID` runs live. Then: the reader is killed with -9 while
the collector keeps running, and the collector is stopped with SIGINT.
Finally the recorded variant: `collect --record` of a second reader, and
`pyksm hint --replay` of that trace while the reader is still alive.

usage: collect_live.py OUT.json WORKDIR
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pyksm.collect import tracefile
from pyksm.kernel import hints, ksm

HERE = Path(__file__).parent
READER = HERE / "read_into_mergeable.py"
PY = sys.executable
out_path, work = Path(sys.argv[1]), Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
res: dict[str, object] = {}
k = ksm.Ksm()
res["hints_supported"] = k.hints_supported
if not k.hints_supported:  # the kernel was built without the KSM++ series
    out_path.write_text(json.dumps(res))
    sys.exit(0)
hints.ensure_debugfs()
k.write("run", 1)
res["knobs"] = {
    n: k.read(n) for n in ("hint_capacity", "hint_interleave", "pages_to_scan", "sleep_millisecs")
}
data = work / "data.bin"
data.write_bytes(os.urandom(16 * 4096))


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return bool(pred())


def start_collector(args: list[str], tag: str) -> tuple[subprocess.Popen[str], Path]:
    log = work / f"{tag}.stderr"
    proc = subprocess.Popen(
        [PY, "-m", "pyksm.cli", "collect", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),  # noqa: SIM115
        text=True,
    )
    return proc, log


# --- live ---------------------------------------------------------------
ready = work / "ready-live"
expected = work / "expected-live.json"
reader = subprocess.Popen(
    [PY, str(READER), str(data), str(expected), "--wait-for", str(ready), "--linger", "300"]
)
rec0, merged0 = k.read_int("hints_received"), k.read_int("hint_pages_merged")
collector, log = start_collector(["-p", str(reader.pid)], "live")
res["attached"] = wait_for(lambda: "attached" in log.read_text(), 240)
t_attach = time.monotonic()
ready.touch()
wait_for(expected.exists, 60)
exp = json.loads(expected.read_text())
res["expected"] = exp["expected"]
n_expected = len(exp["expected"])
wait_for(lambda: k.read_int("hints_received") - rec0 >= n_expected, 30)
res["hints_received_delta"] = k.read_int("hints_received") - rec0
res["merged_through_hints"] = wait_for(lambda: k.read_int("hint_pages_merged") > merged0, 120)
res["hint_pages_merged_delta"] = k.read_int("hint_pages_merged") - merged0
res["seconds_to_merge"] = round(time.monotonic() - t_attach, 1)
res["process_ksm"] = ksm.process_stat(reader.pid)
# Robustness: the target dies under the collector.
reader.kill()
reader.wait()
time.sleep(2.5)  # two target refreshes
res["collector_alive_after_target_kill"] = collector.poll() is None
collector.send_signal(signal.SIGINT)
stdout, _ = collector.communicate(timeout=60)
res["collector_exit"] = collector.returncode
res["live_stats"] = json.loads(stdout) if stdout.strip() else None
res["live_stderr"] = log.read_text()[-2000:]

# --- record, then replay --------------------------------------------------
trace = work / "r.trace"
expected2 = work / "expected-record.json"
reader2 = subprocess.Popen(
    [PY, str(READER), str(data), str(expected2), "--wait-for", str(trace), "--linger", "300"]
)
collector2, log2 = start_collector(["-p", str(reader2.pid), "--record", str(trace)], "record")
wait_for(expected2.exists, 240)
time.sleep(0.5)
collector2.send_signal(signal.SIGTERM)
stdout2, _ = collector2.communicate(timeout=60)
res["record_exit"] = collector2.returncode
res["record_stats"] = json.loads(stdout2) if stdout2.strip() else None
res["record_expected"] = json.loads(expected2.read_text())["expected"]
seen = sorted(
    ("preadv" if (n := tracefile.probe_name(e.probe)) == "preadv2" else n, e.start, e.length)
    for e in tracefile.read_trace(trace)
    if e.tgid == reader2.pid
)
res["record_exact"] = seen == sorted(tuple(x) for x in res["record_expected"])
rec1 = k.read_int("hints_received")
rp = subprocess.run(
    [PY, "-m", "pyksm.cli", "hint", "--replay", str(trace), "--speed", "0"],
    capture_output=True,
    text=True,
)
res["replay_exit"] = rp.returncode
res["replay_stats"] = json.loads(rp.stdout) if rp.returncode == 0 else rp.stderr
res["replay_received_delta"] = k.read_int("hints_received") - rec1
reader2.kill()
out_path.write_text(json.dumps(res, indent=1))

"""Guest side of test_bcc: compile and attach a tracepoint program with
Debian's bcc, make a known number of syscalls, read the count back."""

import json
import os
import sys
from pathlib import Path

from bcc import BPF

CALLS = 17
PROG = """
BPF_ARRAY(hits, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_TGID)
        return 0;
    int zero = 0;
    u64 *v = hits.lookup(&zero);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}
"""

b = BPF(text=PROG, cflags=[f"-DTARGET_TGID={os.getpid()}"])
for _ in range(CALLS):
    os.getppid()
count = b["hits"][0].value
Path(sys.argv[1]).write_text(json.dumps({"expected": CALLS, "seen": count}))

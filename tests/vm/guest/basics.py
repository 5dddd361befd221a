"""Guest side of test_boot.py: facts about the running kernel as JSON."""

import json
import os
import platform
import sys
from pathlib import Path

out = Path(sys.argv[1])
ksm = Path("/sys/kernel/mm/ksm")
facts = {
    "release": platform.release(),
    "ksm_dir": ksm.is_dir(),
    "ksm_files": sorted(p.name for p in ksm.iterdir()) if ksm.is_dir() else [],
    "kheaders": os.path.getsize("/sys/kernel/kheaders.tar.xz")
    if os.path.exists("/sys/kernel/kheaders.tar.xz")
    else 0,
    "btf": os.path.exists("/sys/kernel/btf/vmlinux"),
    "numa_nodes": sorted(p.name for p in Path("/sys/devices/system/node").glob("node[0-9]*")),
    "writable_tmp": os.access("/tmp", os.W_OK),
}
out.write_text(json.dumps(facts))

"""The read event in C (bpf/read_common.h), ctypes and the trace format agree."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

from pyksm import events
from pyksm.collect import tracefile

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "read_common.h"
C_TYPES = {"u64": ctypes.c_uint64, "u32": ctypes.c_uint32}
STRUCT_CODES = {ctypes.c_uint64: "Q", ctypes.c_uint32: "I"}


def c_fields() -> list[tuple[str, type]]:
    text = HEADER.read_text()
    body = re.search(r"struct read_event \{(.*?)\};", text, re.DOTALL)
    assert body, "struct read_event not found"
    return [(name, C_TYPES[kind]) for kind, name in re.findall(r"(u\d+) (\w+);", body.group(1))]


def test_ctypes_struct_is_the_c_struct() -> None:
    assert [(n, t) for n, t in events.EventStruct._fields_] == c_fields()


def test_trace_record_is_the_c_struct_without_padding() -> None:
    codes = "<" + "".join(STRUCT_CODES[t] for _, t in c_fields())
    assert events.RECORD.format == codes
    assert events.RECORD.size == ctypes.sizeof(events.EventStruct) == 32
    assert tracefile.RECORD is events.RECORD


def test_a_record_round_trips_through_the_ctypes_layout() -> None:
    e = events.ReadEvent(123, 42, 2, 0x7F0000001000, 8192)
    raw = events.RECORD.pack(e.ts_ns, e.tgid, e.probe, e.start, e.length)
    s = events.EventStruct.from_buffer_copy(raw)
    assert (s.ts_ns, s.tgid, s.probe, s.start, s.len) == (123, 42, 2, 0x7F0000001000, 8192)


def test_the_pipeline_types_load_no_bpf_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pyksm.events, pyksm.control.controller, pyksm.collect.tracefile, "
        "pyksm.analysis.hinttrace; "
        "print(sorted(m for m in sys.modules if m == 'bcc' or m.startswith('pyksm.probes')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr

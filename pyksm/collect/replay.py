"""Replay a hint trace into the KSM++ kernel: ``pyksm hint --replay FILE``.

Records go through the same controller as live hints (page-align, coalesce,
de-dup; no rate cap and no memory filter, the trace's processes may differ),
grouped into the trace's own drains of ``batch_ns`` and paced by their
timestamps divided by ``speed`` (0: as fast as possible). Records of
processes that have exited are rejected by the kernel (ESRCH) and counted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyksm.collect.tracefile import inspect, read_trace
from pyksm.control.controller import Controller
from pyksm.events import ReadEvent
from pyksm.kernel.hints import HintSink, open_intake

__all__ = ["batches", "replay"]


def batches(events: Iterator[ReadEvent], batch_ns: int) -> Iterator[list[ReadEvent]]:
    batch: list[ReadEvent] = []
    for e in events:
        if batch and e.ts_ns - batch[0].ts_ns >= batch_ns:
            yield batch
            batch = []
        batch.append(e)
    if batch:
        yield batch


def replay(
    path: Path,
    speed: float = 1.0,
    batch_ns: int = 50_000_000,
    writer: HintSink | None = None,
    intake: str = "auto",
) -> dict[str, Any]:
    inspect(path)  # the whole file is checked before the kernel is asked anything
    events = read_trace(path)
    ctl = Controller()
    own = writer is None
    w = writer or open_intake(intake)
    t0_wall = time.monotonic()
    t0_trace: int | None = None
    try:
        for batch in batches(events, batch_ns):
            if t0_trace is None:
                t0_trace = batch[0].ts_ns
            if speed > 0:
                due = t0_wall + (batch[0].ts_ns - t0_trace) / 1e9 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            w.send(ctl.process(batch, batch[0].ts_ns))
    finally:
        if own:
            w.close()
    return {
        **ctl.stats.as_dict(),
        "seconds": round(time.monotonic() - t0_wall, 3),
        "hints_sent": w.sent,
        "hints_rejected": dict(w.rejected),
    }

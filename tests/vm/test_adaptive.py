"""The adaptive hint_interleave on the patched kernel's real knobs and counters."""

from __future__ import annotations

import json
from pathlib import Path

from tests.vm.conftest import REPO, Boot, summarize

GUEST = Path(__file__).parent / "guest"


def _ratio(knob: str) -> tuple[int, int]:
    h, _, low = knob.partition(":")
    return int(h), int(low)


def test_interleave_rises_under_a_hint_flood_and_returns_to_the_base(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """A flood of hints keeps a backlog waiting: the law raises hint_interleave
    above 1:1 (within the kernel's bounds) while the linear scan still ends
    rounds; once the flood stops and the backlog drains, the knob is 1:1 again."""
    out = tmp_path / "adaptive.json"
    # This checkout's pyksm, also where the venv's editable install points at another.
    result = boot(
        [python, str(GUEST / "adaptive_interleave.py"), str(out)],
        timeout=1200.0,
        env={"PYTHONPATH": str(REPO)},
    )
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    samples = r["samples"]
    flood = [s for s in samples if s["phase"] == "flood"]
    drain = [s for s in samples if s["phase"] == "drain"]
    raised = [_ratio(s["knob"]) for s in flood if s["knob"] != "1:1"]
    summarize(
        f"adaptive interleave: base {r['base']}, ticks per ratio {r['ticks_by_ratio']}, "
        f"raised at {r.get('raised_s')} s, flood {r.get('flood_s')} s "
        f"({r['flood_full_scans']} rounds raised), "
        f"drained at {r.get('drained_s')} s, {r['changes']} changes, dropped {r['hints_dropped']}"
    )
    assert r["base"] == "1:1"
    assert r["backlog_fields"] == ["capacity", "dropped_age", "dropped_overflow", "pending"]
    assert r["rejected"] == {}
    # During the flood: above 1:1, and never beyond what the kernel allows.
    assert raised, f"hint_interleave stayed 1:1 under the flood: {flood[-5:]}"
    assert all(low >= 1 and h <= 16 * low and h > low for h, low in raised)
    assert max(h / low for h, low in raised) >= 4
    # ... while the linear scan still finished rounds under the raised knob.
    assert r["flood_full_scans"] >= 2, f"the linear scan stalled: {flood[-5:]}"
    # After it: the backlog drained and the knob came back to the base.
    assert "drained_s" in r, f"the knob did not come back to 1:1: {drain[-5:]}"
    assert drain and drain[-1]["pending"] == 0
    assert r["knob_after_exit"] == "1:1"
    assert r["full_scans"] >= r["flood_full_scans"]
    assert r["hint_pages_scanned"] > 0
    assert r["merging"] > 0

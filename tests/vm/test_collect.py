"""The live hint pipeline on the patched kernel: probes -> controller -> hints_raw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.vm.conftest import Boot

GUEST = Path(__file__).parent / "guest"


def test_live_collect_hints_exact_reads_and_they_merge(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    out = tmp_path / "collect.json"
    result = boot([python, str(GUEST / "collect_live.py"), str(out), str(tmp_path / "work")])
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    if not r["hints_supported"]:
        pytest.skip("this test kernel has no KSM++ hints (kernel-patches/series applies none)")
    print(json.dumps({k: v for k, v in r.items() if "stderr" not in k}, indent=1))
    assert r["attached"], r["live_stderr"]
    expected = r["expected"]
    assert {e[0] for e in expected} == {"preadv", "readv", "pread64", "read", "io_submit"}
    # One hint per read range (they are page-aligned, with gaps between them).
    assert r["hints_received_delta"] == len(expected)
    live = r["live_stats"]
    assert live["hints_sent"] == len(expected)
    assert live["hints_rejected"] == {}
    assert live["outside_bytes"] == 0
    assert r["merged_through_hints"], r
    assert r["hint_pages_merged_delta"] > 0
    # kill -9 of the target: the collector went on and then stopped cleanly.
    assert r["collector_alive_after_target_kill"]
    assert r["collector_exit"] == 0 and live["interrupted"]
    assert live["targets_exited"]
    # record mode: every read recorded exactly; SIGTERM flushed the trace.
    assert r["record_exit"] == 0 and r["record_stats"]["interrupted"]
    assert r["record_stats"]["records_written"] == len(r["record_expected"])
    assert r["record_exact"]  # every (syscall, address, length) as the reader made it
    assert r["replay_exit"] == 0, r["replay_stats"]
    assert r["replay_received_delta"] == len(r["record_expected"])

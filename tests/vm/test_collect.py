"""The live hint pipeline on the patched kernel: probes -> controller -> hints_raw."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pyksm.probes import loader
from tests.vm.conftest import Boot, summarize

GUEST = Path(__file__).parent / "guest"


def _collect_live(
    boot: Boot, python: str, tmp_path: Path, *args: str, **boot_kw: Any
) -> dict[str, Any]:
    """Run guest/collect_live.py in the test kernel; its JSON result."""
    out = tmp_path / "collect.json"
    argv = [python, str(GUEST / "collect_live.py"), str(out), str(tmp_path / "work"), *args]
    result = boot(argv, **boot_kw)
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r: dict[str, Any] = json.loads(out.read_text())
    if not r["hints_supported"]:
        pytest.skip("this test kernel has no KSM++ hints (kernel-patches/series applies none)")
    print(json.dumps({k: v for k, v in r.items() if "stderr" not in k}, indent=1))
    return r


def test_live_collect_hints_exact_reads_and_they_merge(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    r = _collect_live(boot, python, tmp_path)
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


# How the vfs layer names each of the reader's calls (bpf/vfs_read_trace.c).
VFS_PROBE = loader.VFS_PROBE_FOR


def test_vfs_layer_sees_io_uring_and_reports_exact_reads(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """--layer vfs (BPF trampolines on the test kernel): read, pread64, readv,
    preadv, io_submit and io_uring READ/READV from a ramfs file into
    MADV_MERGEABLE memory, live and recorded; the syscalls layer, the
    filemap_read fallback and the kprobe mechanism record the same reader."""
    # Four bcc compiles run at once in the record phase (~3 min each under TCG).
    r = _collect_live(boot, python, tmp_path, "--layer", "vfs", timeout=3600, memory="3G")
    assert r["attached"], r["live_stderr"]
    expected = r["expected"]
    assert {e[0] for e in expected} == set(VFS_PROBE)
    # live: one hint per read range, io_uring's included.
    live = r["live_stats"]
    # The test kernel has BTF and lets trampolines attach: vfs means fentry/fexit.
    assert live["layer"] == "vfs-fentry", live["features"]
    assert r["hints_received_delta"] == len(expected)
    assert live["hints_sent"] == len(expected)
    assert live["hints_rejected"] == {}
    assert live["outside_bytes"] == 0
    assert live["events_by_probe"] == dict(Counter(VFS_PROBE[e[0]] for e in expected))
    assert live["bpf"]["ringbuf_full"] == 0 and live["bpf"]["prog_missed"] == 0
    assert r["merged_through_hints"] and r["hint_pages_merged_delta"] > 0, r
    assert r["collector_exit"] == 0 and live["interrupted"]
    # record: exactly the reader's (call, address, length) list, nothing else.
    assert r["record_attached"] and all(r["record_started"].values()), r["record_started"]
    cmp = r["comparison"]
    assert cmp["record"]["layer"] == "vfs-fentry"
    assert r["record_exit"] == 0 and r["record_stats"]["interrupted"]
    assert cmp["record"]["exact"], cmp["record"]
    assert r["replay_exit"] == 0 and r["replay_received_delta"] == len(r["record_expected"])
    # Without aio_read, AIO reads come through filemap_read too; read() & co.
    # are still reported once each (never again by the filemap_read beneath).
    assert cmp["vfs-fallback"]["exact"], cmp["vfs-fallback"]
    assert cmp["vfs-fallback"]["layer"] == "vfs-fentry"
    # kprobes instead of trampolines: the same calls, addresses and lengths.
    assert r["other_mechanism"] == "vfs-kprobe"
    kp = cmp["vfs-kprobe"]
    assert kp["layer"] == "vfs-kprobe" and kp["exact"], kp
    assert kp["bpf"]["kprobe_missed"] == 0 and cmp["record"]["bpf"]["prog_missed"] == 0
    # The syscalls layer misses exactly the io_uring reads.
    n_uring = sum(1 for e in r["record_expected"] if e[0] == "io_uring")
    sys_cmp = cmp["syscalls"]
    assert sys_cmp["missed_calls"] == ["io_uring"]
    assert sys_cmp["ranges_seen"] == len(r["record_expected"]) - n_uring
    assert sys_cmp["ranges_extra"] == 0
    summarize(
        "collect layers (ranges seen / expected, bytes): "
        + "; ".join(
            f"{name} {c['ranges_seen']}/{c['ranges_expected']} {c['bytes_seen']}/"
            f"{c['bytes_expected']}{' exact' if c['exact'] else ''}"
            for name, c in cmp.items()
        )
    )

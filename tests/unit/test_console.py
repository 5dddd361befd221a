"""The console scanner finds each kind of kernel report, and nothing in clean logs."""

from __future__ import annotations

import pytest

from pyksm.lab import console

CLEAN = """\
[    0.000000] Linux version 6.12.117-pyksm (root@host) #1 SMP
[    0.512345] KSM: hint buffer of 4096 records
[    1.000000] Run /init as init process
ok 1 KSM unmerge
# Totals: pass:5 fail:0 xfail:0 xpass:0 skip:0 error:0
"""

KASAN = """\
[   12.100000] ==================================================================
[   12.100001] BUG: KASAN: slab-use-after-free in ksm_hint_pop+0x4c/0x90
[   12.100002] Read of size 8 at addr ffff888003a1c0e8 by task ksmd/42
[   12.100003] CPU: 1 UID: 0 PID: 42 Comm: ksmd Not tainted 6.12.117-pyksm
[   12.100004] ==================================================================
[   12.200000] some later line
"""

CASES = {
    "kasan": KASAN,
    "kfence": "[ 3.0] BUG: KFENCE: out-of-bounds read in foo+0x1/0x2\n",
    "lockdep": "[ 3.0] WARNING: possible circular locking dependency detected\n",
    "sleep-in-atomic": "[ 3.0] BUG: sleeping function called from invalid context at mm/ksm.c:1\n",
    "hung-task": "[ 180.0] INFO: task ksmd:42 blocked for more than 61 seconds.\n",
    "soft-lockup": "[ 50.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [ksmd:42]\n",
    "bug": "[ 3.0] kernel BUG at mm/ksm.c:1234!\n[ 3.0] Oops: invalid opcode: 0000 [#1] SMP\n",
    "oops": "[ 3.0] Oops: general protection fault, probably for non-canonical address\n",
    "warning": "[ 3.0] WARNING: CPU: 1 PID: 42 at mm/ksm.c:99 scan_hint+0x1/0x2\n",
    "rcu-stall": "[ 30.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
    "panic": "Kernel panic - not syncing: Attempted to kill init!\n",
}


def test_clean_log_has_no_reports() -> None:
    assert console.scan(CLEAN) == []


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_report_kind_is_found(kind: str) -> None:
    reports = console.scan(CLEAN + CASES[kind] + CLEAN)
    assert reports, f"{kind} report not found"
    assert reports[0].kind == kind


def test_kasan_report_keeps_its_block_and_line() -> None:
    (rep,) = console.scan(CLEAN + KASAN)
    assert rep.headline.startswith("BUG: KASAN: slab-use-after-free")
    assert "ksmd/42" in rep.text
    assert "some later line" not in rep.text
    assert rep.line == CLEAN.count("\n") + 2


def test_two_reports_are_both_listed() -> None:
    log = CASES["warning"] + CLEAN + CASES["hung-task"]
    assert [r.kind for r in console.scan(log)] == ["warning", "hung-task"]

"""Target discovery and hintable memory, on a fake /proc."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyksm.collect.targets import MemoryMaps, TargetSpec
from pyksm.errors import PyksmError
from pyksm.probes.headers import prepare_merged_tree
from pyksm.procfs import mergeable_spans

SMAPS = """\
7f0000000000-7f0040000000 rw-p 00000000 00:00 0
Size:            1048576 kB
VmFlags: rd wr mr mw me ac sd mg
7f0100000000-7f0140001000 rwxp 00000000 00:00 0
VmFlags: rd wr ex mr mw me ac sd
7f0200000000-7f0200100000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac mg
7f0300000000-7f0300001000 r--p 00000000 08:01 1234 /usr/bin/qemu
VmFlags: rd mr mw me mg
"""

MAPS = "".join(line + "\n" for line in SMAPS.splitlines() if not line[0].isupper())


def test_mergeable_spans_pick_rw_mg_mappings_and_exact_ram_size() -> None:
    assert mergeable_spans(SMAPS) == [
        (0x7F0000000000, 0x7F0040000000),
        (0x7F0200000000, 0x7F0200100000),
    ]
    assert mergeable_spans(SMAPS, size=1 << 30) == [(0x7F0000000000, 0x7F0040000000)]


def _fake_proc(root: Path) -> Path:
    proc = root / "proc"
    for pid, comm in ((10, "qemu-system-x86"), (11, "bash"), (12, "qemu-system-aar")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(comm + "\n")
        (proc / str(pid) / "smaps").write_text(SMAPS)
        (proc / str(pid) / "maps").write_text(MAPS)
    return proc


def test_resolve_pids_cgroups_and_qemu(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    cg = tmp_path / "cg"
    (cg / "vm.slice" / "a").mkdir(parents=True)
    (cg / "vm.slice" / "cgroup.procs").write_text("11\n")
    (cg / "vm.slice" / "a" / "cgroup.procs").write_text("77\n78\n")
    spec = TargetSpec(pids=(11,), cgroups=("vm.slice",), qemu=True, proc=proc, cgroup_root=cg)
    spec.check()
    assert spec.resolve() == {10, 11, 12, 77, 78}
    (proc / "13").mkdir()
    (proc / "13" / "comm").write_text("qemu-system-x86\n")
    assert 13 in spec.resolve()  # a QEMU that started later


def test_bad_targets_are_one_line_errors(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    with pytest.raises(PyksmError, match="no targets"):
        TargetSpec(proc=proc).check()
    with pytest.raises(PyksmError, match="no process 99"):
        TargetSpec(pids=(99,), proc=proc).check()
    with pytest.raises(PyksmError, match="no cgroup"):
        TargetSpec(cgroups=("nope",), proc=proc, cgroup_root=tmp_path).check()


def test_memory_maps_cache_and_refresh(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    mm = MemoryMaps(refresh_ns=100, flags_refresh_ns=10_000, proc=proc, ram_sizes={10: 1 << 30})
    assert mm.spans(10, 0) == [(0x7F0000000000, 0x7F0040000000)]
    assert mm.smaps_reads == 1
    (proc / "10" / "smaps").write_text("")
    assert mm.spans(10, 50) != []  # cached
    assert mm.spans(10, 200) != []  # maps checked, unchanged: smaps not read again
    assert mm.smaps_reads == 1
    (proc / "10" / "maps").write_text(MAPS + "7f0400000000-7f0400001000 rw-p 0 00:00 0\n")
    assert mm.spans(10, 250) != []  # changed, but not looked at again yet
    assert mm.spans(10, 300) == []  # maps changed: smaps read again
    assert mm.smaps_reads == 2
    (proc / "10" / "smaps").write_text(SMAPS)
    assert mm.spans(10, 400) == []  # maps as at the last smaps read
    assert mm.spans(10, 10_300) != []  # flags_refresh_ns: smaps read again
    assert mm.smaps_reads == 3
    assert mm.spans(999, 0) == []  # gone: nothing hintable
    mm.forget(10)
    assert mm.spans(10, 10_301) != [] and mm.smaps_reads == 5


def test_qemu_scan_reads_comm_of_new_pids_and_all_every_rescan(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    spec = TargetSpec(qemu=True, proc=proc, rescan_ns=1000)
    assert spec.resolve(0) == {10, 12}
    (proc / "11" / "comm").write_text("qemu-system-x86\n")  # bash exec()s a QEMU
    (proc / "14").mkdir()
    (proc / "14" / "comm").write_text("qemu-system-arm\n")
    assert spec.resolve(500) == {10, 12, 14}  # a new pid at once; 11's comm not read again
    assert spec.resolve(1000) == {10, 11, 12, 14}  # every comm again
    for f in (proc / "12").iterdir():
        f.unlink()
    (proc / "12").rmdir()
    assert spec.resolve(1100) == {10, 11, 14}  # exited


def test_header_tree_is_merged_from_common_and_arch(tmp_path: Path) -> None:
    common = tmp_path / "linux-headers-6.1.0-9-common"
    arch = tmp_path / "linux-headers-6.1.0-9-amd64"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "a.h").write_text("common a\n")
    (common / "include" / "linux" / "b.h").write_text("common b\n")
    (arch / "include" / "linux").mkdir(parents=True)
    (arch / "include" / "linux" / "b.h").write_text("arch b\n")
    tree = prepare_merged_tree(common, arch, tmp_path / "out")
    assert (tree / "include" / "linux" / "a.h").read_text() == "common a\n"
    assert (tree / "include" / "linux" / "b.h").read_text() == "arch b\n"
    assert (tree / "include" / "linux" / "a.h").is_symlink()
    assert prepare_merged_tree(common, arch, tmp_path / "out") == tree  # cached

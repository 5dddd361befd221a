"""Probe layers (syscalls, vfs): program text, stable probe ids, feature
reporting and `pyksm collect --layer`. No root, bcc or kprobes needed."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

from pyksm.cli import main
from pyksm.collect import cli as collect_cli
from pyksm.errors import PyksmError
from pyksm.probes import features, loader
from pyksm.probes.features import VFS_FUNCTIONS, Features

BPF = Path(loader.BPF_SOURCE).parent
ALL = Features(
    tracefs=None,
    syscalls=features.READ_SYSCALLS,
    kprobes=True,
    kheaders=True,
    functions=VFS_FUNCTIONS,
)
NO_KPROBES = Features(tracefs=None, syscalls=features.READ_SYSCALLS)


def test_probe_ids_are_stable_and_match_the_c_header() -> None:
    # Trace files store these ids: the old ones never change, new ones are appended.
    assert loader.PROBE_NAMES == {
        1: "read",
        2: "pread64",
        3: "readv",
        4: "preadv",
        5: "preadv2",
        6: "io_submit",
        7: "vfs_read",
        8: "vfs_readv",
        9: "aio_read",
        10: "filemap_read",
    }
    header = (BPF / "read_common.h").read_text()
    defined = {int(n): name.lower() for name, n in re.findall(r"#define PROBE_(\w+) (\d+)", header)}
    assert defined == loader.PROBE_NAMES


def test_stat_names_match_the_stats_map() -> None:
    header = (BPF / "read_common.h").read_text()
    size = re.search(r"BPF_ARRAY\(stats, u64, (\d+)\)", header)
    assert size and int(size.group(1)) == len(loader.STAT_NAMES)
    slots = sorted(int(n) for n in re.findall(r"#define STAT_\w+ (\d+)", header))
    assert slots == list(range(len(loader.STAT_NAMES)))


def test_vfs_program_has_an_enter_and_exit_per_function() -> None:
    text = (BPF / "vfs_read_trace.c").read_text()
    assert set(re.findall(r"#ifdef WITH_(\w+)", text)) == {f.upper() for f in VFS_FUNCTIONS}
    for fn in VFS_FUNCTIONS:  # the names ReadProbes attaches
        assert f"int {fn}_enter(struct pt_regs *ctx)" in text
        assert f"int {fn}_exit(struct pt_regs *ctx)" in text


def test_vfs_program_text_inlines_the_header_and_selects_functions() -> None:
    text, cflags = loader.program_text(loader.ProbeOptions(layer="vfs", min_bytes=4096), ALL)
    assert '#include "read_common.h"' not in text
    assert "struct read_event {" in text and "int filemap_read_exit(" in text
    assert "-DMIN_BYTES=4096" in cflags and "-DRINGBUF_PAGES=1024" in cflags
    assert [c for c in cflags if c.startswith("-DWITH_")] == [
        "-DWITH_VFS_READ",
        "-DWITH_VFS_READV",
        "-DWITH_AIO_READ",
        "-DWITH_FILEMAP_READ",
    ]
    assert not any("IOCB" in c for c in cflags)


def test_vfs_layer_leaves_out_functions_the_kernel_lacks() -> None:
    feats = Features(tracefs=None, kprobes=True, functions=("vfs_read", "filemap_read"))
    opts = loader.ProbeOptions(layer="vfs", functions=("vfs_read", "vfs_readv", "filemap_read"))
    _, cflags = loader.program_text(opts, feats)
    assert [c for c in cflags if c.startswith("-DWITH_")] == [
        "-DWITH_VFS_READ",
        "-DWITH_FILEMAP_READ",
    ]
    with pytest.raises(PyksmError, match="none of aio_read can be kprobed"):
        loader.program_text(loader.ProbeOptions(layer="vfs", functions=("aio_read",)), feats)
    with pytest.raises(PyksmError, match="cannot probe do_sys_open"):
        loader.program_text(loader.ProbeOptions(layer="vfs", functions=("do_sys_open",)), ALL)


def test_vfs_layer_is_refused_without_kprobes() -> None:
    with pytest.raises(PyksmError, match="vfs layer needs kprobes") as e:
        loader.program_text(loader.ProbeOptions(layer="vfs"), NO_KPROBES)
    assert "\n" not in str(e.value)
    assert e.value.hint and "--layer syscalls" in e.value.hint


def test_auto_is_the_syscalls_program_as_before() -> None:
    for layer in ("auto", "syscalls"):
        text, cflags = loader.program_text(loader.ProbeOptions(layer=layer), ALL)
        assert "TRACEPOINT_PROBE(syscalls, sys_enter_pread64)" in text
        assert "struct read_event {" in text and '#include "read_common.h"' not in text
        assert cflags == [
            "-w",
            "-DMIN_BYTES=512",
            "-DMAX_IOV=1024",
            "-DRINGBUF_PAGES=1024",
            "-DMAX_IOCBS=4",
            "-DMAX_AIO_IOV=8",
            *(f"-DWITH_{s.upper()}" for s in features.READ_SYSCALLS),
        ]
    assert loader.resolve_layer("auto", ALL) == "syscalls"
    with pytest.raises(PyksmError, match="unknown probe layer"):
        loader.resolve_layer("fentry", ALL)


def test_features_say_which_layers_exist(tmp_path: Path) -> None:
    assert ALL.layers == ("syscalls", "vfs")
    assert NO_KPROBES.layers == ("syscalls",)
    assert Features(tracefs=None, kprobes=True).layers == ()  # no vfs function found
    assert ALL.describe().startswith("layers: syscalls, vfs; ")
    assert "kprobes: yes (vfs_read, vfs_readv, aio_read, filemap_read)" in ALL.describe()
    assert "layers: syscalls;" in NO_KPROBES.describe() and "kprobes: no" in NO_KPROBES.describe()
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        "ffffffff8127ac13 T vfs_read\n"
        "ffffffff812bc94d t aio_read\n"
        "ffffffff81000000 d filemap_read\n"  # data, not a function
        "ffffffffc0000000 t vfs_readv_x [mod]\n"
    )
    assert features.kernel_functions(VFS_FUNCTIONS, kallsyms) == ("vfs_read", "aio_read")
    assert features.kernel_functions(VFS_FUNCTIONS, tmp_path / "missing") == ()
    # With ftrace, only traceable functions: available_filter_functions decides.
    (tmp_path / "available_filter_functions").write_text(
        "filemap_read\nvfs_readv\nsome_fn [some_module]\n"
    )
    assert features.kernel_functions(VFS_FUNCTIONS, kallsyms, tracefs=tmp_path) == (
        "vfs_readv",
        "filemap_read",
    )


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    collect_cli.register(parser.add_subparsers())
    return parser.parse_args(["collect", *argv])


def test_layer_flag_parsing() -> None:
    assert collect_cli.LAYER_CHOICES == loader.LAYER_CHOICES
    assert _parse(["-p", "1"]).layer == "auto"
    args = _parse(["-p", "1", "--layer", "vfs", "--functions", "vfs_read, filemap_read"])
    assert args.layer == "vfs"
    assert collect_cli._functions(args) == ("vfs_read", "filemap_read")
    assert collect_cli._functions(_parse(["-p", "1"])) == VFS_FUNCTIONS


def test_unknown_layer_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["collect", "-p", "1", "--layer", "fentry"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make features.probe() return the Features the test sets."""

    class Holder:
        feats = NO_KPROBES

    monkeypatch.setattr(features, "probe", lambda: Holder.feats)
    return Holder


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collect", "--ebpf", "--layer", "vfs"], "vfs layer needs kprobes"),
        (["collect", "-p", "1", "--record", "x", "--layer", "vfs"], "vfs layer needs kprobes"),
        (["collect", "-p", "1", "--layer", "vfs", "--syscalls", "read"], "--syscalls chooses"),
        (["collect", "-p", "1", "--functions", "vfs_read"], "--functions chooses"),
    ],
)
def test_layer_errors_are_one_line(
    fake_kernel: Any,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before anything started


def test_ebpf_prints_the_chosen_program(
    fake_kernel: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["collect", "--ebpf"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("// layer: syscalls (auto)\n// cflags: -w ")
    assert "sys_enter_pread64" in out
    fake_kernel.feats = ALL
    assert main(["collect", "--ebpf", "--layer", "vfs", "--functions", "vfs_read"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("// layer: vfs (vfs)\n")
    assert "-DWITH_VFS_READ" in out and "-DWITH_FILEMAP_READ" not in out
    assert "int vfs_read_enter(struct pt_regs *ctx)" in out


def test_collect_passes_the_layer_to_the_session(
    fake_kernel: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pyksm.collect import session

    fake_kernel.feats = ALL
    seen: dict[str, Any] = {}

    def fake_run(opts: session.CollectOptions, report: Any, ready: Any = None) -> dict[str, Any]:
        seen["opts"] = opts
        raise PyksmError("stop here")

    monkeypatch.setattr(session, "run", fake_run)
    trace = str(tmp_path / "t")
    argv = ["collect", "-p", "1", "--record", trace, "--layer", "vfs", "--functions", "vfs_read"]
    assert main(argv) == 2
    assert seen["opts"].layer == "vfs" and seen["opts"].functions == ("vfs_read",)
    assert main(["collect", "-p", "1", "--record", trace]) == 2
    assert seen["opts"].layer == "auto" and seen["opts"].functions == VFS_FUNCTIONS

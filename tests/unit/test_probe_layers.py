"""Probe layers (syscalls, vfs-kprobe, vfs-fentry): program text, stable probe
ids, feature reporting, the BPF trampoline check and `pyksm collect --layer`.
No root, bcc, kprobes or trampolines needed."""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyksm.cli import main
from pyksm.collect import cli as collect_cli
from pyksm.errors import PyksmError
from pyksm.probes import features, headers, loader
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
# This development machine: BTF, but tracing programs are refused.
REFUSED = (
    "loading an fexit program for vfs_read failed (EPERM): the kernel refuses tracing programs"
)
NO_TRAMPOLINES = Features(
    tracefs=None,
    syscalls=features.READ_SYSCALLS,
    btf=True,
    fentry_functions=(),
    fentry_error=REFUSED,
)
# The test kernel: kprobes and trampolines.
TEST_KERNEL = Features(
    tracefs=None,
    syscalls=features.READ_SYSCALLS,
    kprobes=True,
    kheaders=True,
    functions=VFS_FUNCTIONS,
    btf=True,
    fentry_functions=VFS_FUNCTIONS,
)


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


def test_vfs_layer_is_refused_without_kprobes_or_trampolines() -> None:
    with pytest.raises(PyksmError, match="vfs-kprobe layer needs kprobes") as e:
        loader.program_text(loader.ProbeOptions(layer="vfs-kprobe"), NO_KPROBES)
    assert "\n" not in str(e.value)
    assert e.value.hint and "--layer syscalls" in e.value.hint
    # vfs: neither mechanism; the message says why trampolines did not work
    with pytest.raises(PyksmError, match="needs BPF trampolines or kprobes") as e:
        loader.program_text(loader.ProbeOptions(layer="vfs"), NO_TRAMPOLINES)
    assert "\n" not in str(e.value) and "EPERM" in str(e.value)
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
    assert ALL.layers == ("syscalls", "vfs-kprobe")  # trampolines not checked
    assert TEST_KERNEL.layers == ("syscalls", "vfs-kprobe", "vfs-fentry")
    assert NO_KPROBES.layers == ("syscalls",)
    assert NO_TRAMPOLINES.layers == ("syscalls",)
    assert Features(tracefs=None, kprobes=True).layers == ()  # no vfs function found
    assert ALL.describe().startswith("layers: syscalls, vfs-kprobe; ")
    assert "fentry: not checked" in ALL.describe()
    assert "fentry: yes (vfs_read, vfs_readv, aio_read, filemap_read)" in TEST_KERNEL.describe()
    assert f"fentry: no ({REFUSED}); btf: yes" in NO_TRAMPOLINES.describe()
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
        feats = NO_TRAMPOLINES  # like this development machine

        asked: ClassVar[list[bool]] = []  # a new class per test

    def probe(trampolines: bool = False) -> Features:
        Holder.asked.append(trampolines)
        return Holder.feats

    monkeypatch.setattr(features, "probe", probe)
    return Holder


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collect", "--ebpf", "--layer", "vfs"], "needs BPF trampolines or kprobes"),
        (["collect", "-p", "1", "--record", "x", "--layer", "vfs"], "trampolines or kprobes"),
        (["collect", "-p", "1", "--record", "x", "--layer", "vfs-fentry"], "EPERM"),
        (["collect", "-p", "1", "--record", "x", "--layer", "vfs-kprobe"], "needs kprobes"),
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
    assert out.startswith("// layer: vfs-kprobe (vfs)\n")
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


# --- BPF trampolines (vfs-fentry) -------------------------------------------


def test_vfs_resolves_to_trampolines_where_they_work() -> None:
    assert loader.resolve_layer("vfs", TEST_KERNEL) == "vfs-fentry"
    assert loader.resolve_layer("vfs", ALL) == "vfs-kprobe"  # kprobes only
    assert loader.resolve_layer("vfs-kprobe", TEST_KERNEL) == "vfs-kprobe"
    assert loader.resolve_layer("auto", TEST_KERNEL) == "syscalls"
    only_fentry = Features(tracefs=None, btf=True, fentry_functions=("filemap_read",))
    assert loader.resolve_layer("vfs", only_fentry) == "vfs-fentry"
    assert [loader.needs_trampoline_check(x) for x in loader.LAYER_CHOICES] == [
        False,  # auto
        False,  # syscalls
        True,  # vfs
        False,  # vfs-kprobe
        True,  # vfs-fentry
    ]


@pytest.mark.parametrize("feats", [NO_TRAMPOLINES, ALL])
def test_vfs_fentry_is_refused_with_the_reason_in_one_line(feats: Features) -> None:
    with pytest.raises(PyksmError, match="vfs-fentry layer needs BPF trampolines") as e:
        loader.resolve_layer("vfs-fentry", feats)
    msg = str(e.value)
    assert "\n" not in msg
    assert (REFUSED in msg) if feats is NO_TRAMPOLINES else msg.endswith("not checked")
    assert e.value.hint and "--layer syscalls" in e.value.hint


def test_fentry_program_text_uses_trampolines_for_the_functions_that_attached() -> None:
    feats = Features(
        tracefs=None,
        kprobes=True,
        functions=VFS_FUNCTIONS,
        btf=True,
        fentry_functions=("vfs_read", "vfs_readv", "filemap_read"),  # aio_read did not attach
    )
    text, cflags = loader.program_text(loader.ProbeOptions(layer="vfs-fentry"), feats)
    assert text == loader.program_text(loader.ProbeOptions(layer="vfs-kprobe"), feats)[0]
    assert "-DTRAMPOLINES" in cflags
    assert [c for c in cflags if c.startswith("-DWITH_")] == [
        "-DWITH_VFS_READ",
        "-DWITH_VFS_READV",
        "-DWITH_FILEMAP_READ",
    ]
    _, kcflags = loader.program_text(loader.ProbeOptions(layer="vfs-kprobe"), feats)
    assert "-DTRAMPOLINES" not in kcflags and "-DWITH_AIO_READ" in kcflags
    with pytest.raises(PyksmError, match="none of aio_read can be hooked with a BPF trampoline"):
        loader.program_text(loader.ProbeOptions(layer="vfs-fentry", functions=("aio_read",)), feats)


def _fentry_programs(functions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(macro, function) of the programs vfs_read_trace.c's TRAMPOLINES section
    compiles with these WITH_* defines: the C preprocessor decides."""
    text = (BPF / "vfs_read_trace.c").read_text()
    section = text[text.index("#else /* TRAMPOLINES */") :].replace("#else /* TRAMPOLINES */", "")
    section = section.replace("#endif /* TRAMPOLINES */", "")
    argv = ["cpp", "-P", *(f"-DWITH_{f.upper()}" for f in functions)]
    out = subprocess.run(argv, input=section, capture_output=True, text=True, check=True).stdout
    return re.findall(r"^(KFUNC_PROBE|KRETFUNC_PROBE)\((\w+),", out, re.MULTILINE)


@pytest.mark.skipif(shutil.which("cpp") is None, reason="no C preprocessor")
def test_fentry_programs_are_the_hooks_the_loader_attaches() -> None:
    """For every choice of functions: an fexit per function, an fentry where
    fentry_marked() says (so detach/attach and the miss counter name them)."""
    for k in range(1, len(VFS_FUNCTIONS) + 1):
        for chosen in itertools.combinations(VFS_FUNCTIONS, k):
            hooks = _probes("vfs-fentry", chosen)._hooks()
            macro = {"kfunc": "KFUNC_PROBE", "kretfunc": "KRETFUNC_PROBE"}
            assert sorted(_fentry_programs(chosen)) == sorted(
                (macro[kind], fn) for kind, fn, _ in hooks
            ), chosen
    # The default: only aio_read marks (sync reads are told by their kiocb).
    assert loader.fentry_marked(VFS_FUNCTIONS) == {"aio_read"}
    assert loader.fentry_marked(("vfs_read", "filemap_read")) == {"vfs_read"}
    assert loader.fentry_marked(("vfs_read", "vfs_readv", "aio_read")) == set()


def _probes(layer: str, functions: tuple[str, ...] = (), syscalls: tuple[str, ...] = ()) -> Any:
    """A ReadProbes without bcc: only what _hooks/attach/detach read."""
    p = object.__new__(loader.ReadProbes)
    p.layer, p.functions, p.syscalls = layer, functions, syscalls
    p.opts = loader.ProbeOptions()
    p.attached_now = True
    return p


def test_hooks_name_what_each_layer_attaches() -> None:
    assert _probes("vfs-fentry", VFS_FUNCTIONS)._hooks() == [
        ("kretfunc", "vfs_read", "kretfunc__vfs_read"),
        ("kretfunc", "vfs_readv", "kretfunc__vfs_readv"),
        ("kfunc", "aio_read", "kfunc__aio_read"),
        ("kretfunc", "aio_read", "kretfunc__aio_read"),
        ("kretfunc", "filemap_read", "kretfunc__filemap_read"),
    ]
    # Without filemap_read nothing marks outer reads: fexit only.
    assert _probes("vfs-fentry", ("vfs_read", "aio_read"))._hooks() == [
        ("kretfunc", "vfs_read", "kretfunc__vfs_read"),
        ("kretfunc", "aio_read", "kretfunc__aio_read"),
    ]
    assert _probes("vfs-kprobe", ("vfs_read",))._hooks() == [
        ("kprobe", "vfs_read", "vfs_read_enter"),
        ("kretprobe", "vfs_read", "vfs_read_exit"),
    ]
    assert _probes("syscalls", syscalls=("read", "io_submit"))._hooks() == [
        ("tracepoint", "syscalls:sys_enter_read", "tracepoint__syscalls__sys_enter_read"),
        ("tracepoint", "syscalls:sys_exit_read", "tracepoint__syscalls__sys_exit_read"),
        ("tracepoint", "syscalls:sys_enter_io_submit", "tracepoint__syscalls__sys_enter_io_submit"),
    ]
    # ... exactly the tracepoint programs read_trace.c defines
    text = (BPF / "read_trace.c").read_text()
    defined = set(re.findall(r"^TRACEPOINT_PROBE\(syscalls, (sys_\w+)\)", text, re.MULTILINE))
    hooks = _probes("syscalls", syscalls=features.READ_SYSCALLS)._hooks()
    assert {prog.removeprefix("tracepoint__syscalls__") for _, _, prog in hooks} == defined


class _FakeBcc:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda **kw: self.calls.append((name, kw))


@pytest.mark.parametrize(
    ("layer", "functions", "syscalls", "detached", "attached"),
    [
        (
            "vfs-fentry",
            ("vfs_read", "filemap_read"),
            (),
            ["detach_kfunc", "detach_kretfunc", "detach_kretfunc"],
            ["attach_kfunc", "attach_kretfunc", "attach_kretfunc"],
        ),
        (
            "vfs-kprobe",
            ("vfs_read",),
            (),
            ["detach_kprobe", "detach_kretprobe"],
            ["attach_kprobe", "attach_kretprobe"],
        ),
        (
            "syscalls",
            (),
            ("pread64",),
            ["detach_tracepoint", "detach_tracepoint"],
            ["attach_tracepoint", "attach_tracepoint"],
        ),
    ],
)
def test_detach_and_attach_take_every_probe_off_and_back(
    layer: str,
    functions: tuple[str, ...],
    syscalls: tuple[str, ...],
    detached: list[str],
    attached: list[str],
) -> None:
    p = _probes(layer, functions, syscalls)
    p.bpf = _FakeBcc()
    p.detach()
    p.detach()  # already off: nothing more
    assert [name for name, _ in p.bpf.calls] == detached
    p.bpf.calls.clear()
    p.attach()
    p.attach()
    assert [name for name, _ in p.bpf.calls] == attached
    if layer == "vfs-kprobe":
        assert p.bpf.calls[1][1]["maxactive"] == loader.ProbeOptions().maxactive


def test_probe_checks_trampolines_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyksm.probes import trampoline

    asked: list[tuple[str, ...]] = []

    def check(names: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
        asked.append(tuple(names))
        return ("vfs_read",), "aio_read is not a function in the kernel's BTF"

    monkeypatch.setattr(trampoline, "check", check)
    assert features.probe().fentry_functions is None and asked == []
    feats = features.probe(trampolines=True)
    assert asked == [VFS_FUNCTIONS]
    assert feats.fentry_functions == ("vfs_read",) and feats.trampolines
    assert "aio_read is not a function" in feats.fentry_error


@pytest.mark.parametrize(
    ("layer", "asked"),
    [("vfs", True), ("vfs-fentry", True), ("vfs-kprobe", False)],
)
def test_collect_checks_trampolines_for_layers_that_may_use_them(
    fake_kernel: Any, layer: str, asked: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_kernel.feats = TEST_KERNEL
    assert main(["collect", "--ebpf", "--layer", layer]) == 0
    assert fake_kernel.asked == [asked]
    out = capsys.readouterr().out
    resolved = "vfs-kprobe" if layer == "vfs-kprobe" else "vfs-fentry"
    assert out.startswith(f"// layer: {resolved} ({layer})\n")
    assert ("-DTRAMPOLINES" in out.splitlines()[1]) == (resolved == "vfs-fentry")


def test_target_words_set_and_clear_bits_and_write_only_changes() -> None:
    assert loader.target_words({}, {1: 0, 63: 0, 64: 7}) == {0: (1 << 1) | (1 << 63), 1: 1}
    # 64 leaves, 130 arrives, 1 stays: word 0 unchanged, word 1 cleared, word 2 set
    assert loader.target_words({1: 0, 64: 0}, {1: 0, 130: 0}) == {1: 0, 2: 1 << 2}
    assert loader.target_words({5: 0}, {5: 1}) == {}  # groups live in Python only
    last = loader.TGID_WORDS * 64 - 1  # PID_MAX_LIMIT - 1
    assert loader.target_words({}, {last: 0}) == {loader.TGID_WORDS - 1: 1 << 63}
    with pytest.raises(PyksmError, match="outside"):
        loader.target_words({}, {last + 1: 0})
    header = (BPF / "read_common.h").read_text()
    assert "#define TGID_WORDS (4194304 / 64)" in header
    assert loader.TGID_WORDS == 4194304 // 64


def test_set_targets_writes_the_changed_words() -> None:
    class Table(dict[int, int]):
        def Key(self, v: int) -> int:  # bcc's names
            return v

        def Leaf(self, v: int) -> int:
            return v

    p = _probes("syscalls")
    table = Table()
    p.bpf = {"targets": table}
    p._targets = {}
    p.set_targets({100: 0, 101: 2})
    assert table == {1: (1 << 36) | (1 << 37)}
    p.set_targets({101: 2})
    assert table == {1: 1 << 37}
    p.set_targets({})
    assert table == {1: 0}


def test_a_tracefs_mount_that_fails_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess as sp

    monkeypatch.setattr(features, "TRACEFS", (tmp_path / "tracing",))
    monkeypatch.setattr(features.os, "geteuid", lambda: 0)

    def failing_mount(argv: list[str], **_kw: object) -> sp.CompletedProcess[str]:
        return sp.CompletedProcess(argv, 32, "", "mount: unknown filesystem type 'tracefs'.\n")

    monkeypatch.setattr(features.subprocess, "run", failing_mount)
    with pytest.raises(PyksmError, match=r"cannot mount tracefs on .*unknown filesystem type"):
        features.tracefs()


@pytest.mark.parametrize("layer", ["syscalls", "vfs-kprobe"])
def test_a_start_that_fails_after_loading_leaves_no_probe_attached(
    layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bcc loaded (and attached) the program, then a later step failed: cleanup() ran."""
    import sys
    import types

    loaded: list[FakeBPF] = []

    class FakeBPF:
        def __init__(self, text: str, cflags: list[str]) -> None:
            self.cleaned = False
            loaded.append(self)

        def attach_kprobe(self, **_kw: object) -> None:
            pass

        def attach_kretprobe(self, **_kw: object) -> None:
            raise RuntimeError("provoked: cannot attach kretprobe")

        def __getitem__(self, name: str) -> Any:
            raise RuntimeError("provoked: no ring buffer")

        def cleanup(self) -> None:
            self.cleaned = True

    monkeypatch.setitem(sys.modules, "bcc", types.SimpleNamespace(BPF=FakeBPF))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(features, "probe", lambda **_kw: TEST_KERNEL)
    monkeypatch.setattr(headers, "ensure_headers", lambda: "/fake/headers")
    with pytest.raises((PyksmError, RuntimeError), match="provoked"):
        loader.ReadProbes(loader.ProbeOptions(layer=layer))
    assert len(loaded) == 1 and loaded[0].cleaned

"""Fragment parsing and the check that nothing requested was dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.lab import kconfig

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_dropped_option_is_named(tmp_path: Path) -> None:
    frag = write(
        tmp_path, "a.config", "CONFIG_KSM=y\nCONFIG_NUMA_EMU=y\n# CONFIG_SLUB_TINY is not set\n"
    )
    final = kconfig.parse_config("CONFIG_KSM=y\n# CONFIG_NUMA_EMU is not set\n")
    problems = kconfig.dropped(kconfig.parse_fragment(frag), final)
    assert len(problems) == 1
    assert "CONFIG_NUMA_EMU=y (a.config:2) dropped: final value not set" in problems[0]


def test_option_asked_off_but_on(tmp_path: Path) -> None:
    frag = write(tmp_path, "a.config", "# CONFIG_SLUB_TINY is not set\n")
    problems = kconfig.dropped(kconfig.parse_fragment(frag), {"CONFIG_SLUB_TINY": "y"})
    assert problems == ["CONFIG_SLUB_TINY asked off (a.config:1) but is y"]


def test_later_fragment_overrides_earlier(tmp_path: Path) -> None:
    a = write(tmp_path, "a.config", "CONFIG_SLUB_TINY=y\n")
    b = write(tmp_path, "b.config", "# CONFIG_SLUB_TINY is not set\n")
    reqs = kconfig.parse_fragment(a) + kconfig.parse_fragment(b)
    assert kconfig.dropped(reqs, {}) == []


def test_string_values_compare_exactly(tmp_path: Path) -> None:
    frag = write(tmp_path, "a.config", 'CONFIG_LOCALVERSION="-pyksm"\n')
    assert kconfig.dropped(kconfig.parse_fragment(frag), {"CONFIG_LOCALVERSION": '"-pyksm"'}) == []
    assert kconfig.dropped(kconfig.parse_fragment(frag), {"CONFIG_LOCALVERSION": '""'})


def test_garbage_line_is_an_error(tmp_path: Path) -> None:
    frag = write(tmp_path, "a.config", "CONFIG_KSM=y\nKSM on please\n")
    with pytest.raises(PyksmError, match=r"a\.config:2"):
        kconfig.parse_fragment(frag)


def test_repository_fragments_parse_and_ask_for_the_issue_options() -> None:
    cfg = REPO / "kernel-patches" / "config"
    test = kconfig.fragments_for(cfg, "test", patched=False)
    wanted = {r.option for f in test for r in kconfig.parse_fragment(f) if r.value == "y"}
    for opt in (
        "KSM",
        "DEBUG_FS",
        "BPF_SYSCALL",
        "BPF_JIT",
        "BPF_EVENTS",
        "KPROBES",
        "KPROBE_EVENTS",
        "UPROBE_EVENTS",
        "FTRACE_SYSCALLS",
        "DEBUG_INFO_BTF",
        "IKHEADERS",
        "KUNIT",
        "NUMA",
        "NUMA_EMU",
        "VIRTIO_CONSOLE",
        "VIRTIO_MMIO",
        "OVERLAY_FS",
        "ACPI",
        "9P_FS",
    ):
        assert f"CONFIG_{opt}" in wanted, opt
    debug = kconfig.fragments_for(cfg, "debug", patched=False)
    dwanted = {r.option for f in debug for r in kconfig.parse_fragment(f) if r.value == "y"}
    for opt in ("KASAN", "KFENCE", "PROVE_LOCKING", "DEBUG_VM", "DEBUG_LIST", "DEBUG_ATOMIC_SLEEP"):
        assert f"CONFIG_{opt}" in dwanted, opt


def test_unknown_variant() -> None:
    with pytest.raises(PyksmError, match="unknown kernel variant"):
        kconfig.fragments_for(REPO / "kernel-patches" / "config", "fast", patched=True)

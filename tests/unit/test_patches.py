"""Series parsing and patch application on a small tree made here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.lab import patches, source


def make_patch(tmp: Path, name: str, rel: str, old: str, new: str) -> Path:
    a, b = tmp / "mk" / "a", tmp / "mk" / "b"
    for root, text in ((a, old), (b, new)):
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if text:
            f.write_text(text)
        elif f.exists():
            f.unlink()
    diff = subprocess.run(
        ["diff", "-uN", f"a/{rel}", f"b/{rel}"], cwd=tmp / "mk", capture_output=True, text=True
    ).stdout
    p = tmp / "series-dir" / name
    p.parent.mkdir(exist_ok=True)
    p.write_text(diff)
    return p


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    tree = tmp_path / "pristine"
    (tree / "mm").mkdir(parents=True)
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\n")
    (tree / "mm" / "ksm.c").write_text("int a;\nint b;\nint c;\n")
    return tree


def write_series(d: Path, names: list[str], target: str = "6.12.117") -> None:
    d.mkdir(exist_ok=True)
    (d / "series").write_text(f"# target: linux-source-6.12 {target}\n" + "\n".join(names) + "\n")


def test_apply_then_change_series_restores_untouched(tmp_path: Path, pristine: Path) -> None:
    p1 = make_patch(
        tmp_path,
        "0001-b.patch",
        "mm/ksm.c",
        "int a;\nint b;\nint c;\n",
        "int a;\nint b2;\nint c;\n",
    )
    p2 = make_patch(tmp_path, "0002-new.patch", "mm/ksm_hints.c", "", "int hints;\n")
    d = p1.parent
    write_series(d, [p1.name, p2.name])
    series = patches.read_series(d)
    assert series.target_version == "6.12.117"
    tree = tmp_path / "tree"
    patches.apply_series(pristine, tree, series)
    assert (tree / "mm/ksm.c").read_text() == "int a;\nint b2;\nint c;\n"
    assert (tree / "mm/ksm_hints.c").read_text() == "int hints;\n"
    # Drop the second patch: its new file must disappear, the first stays applied.
    write_series(d, [p1.name])
    patches.apply_series(pristine, tree, patches.read_series(d))
    assert not (tree / "mm/ksm_hints.c").exists()
    assert (tree / "mm/ksm.c").read_text() == "int a;\nint b2;\nint c;\n"
    # Empty series: back to pristine.
    write_series(d, [])
    patches.apply_series(pristine, tree, patches.read_series(d))
    assert (tree / "mm/ksm.c").read_text() == (pristine / "mm/ksm.c").read_text()


def test_failing_patch_names_patch_and_hunk(tmp_path: Path, pristine: Path) -> None:
    bad = make_patch(
        tmp_path,
        "0001-bad.patch",
        "mm/ksm.c",
        "int x;\nint y;\nint z;\n",
        "int x;\nint y2;\nint z;\n",
    )
    write_series(bad.parent, [bad.name])
    with pytest.raises(PyksmError) as exc:
        patches.apply_series(pristine, tmp_path / "tree", patches.read_series(bad.parent))
    msg = str(exc.value)
    assert "0001-bad.patch" in msg and "mm/ksm.c" in msg and "Hunk #1 FAILED" in msg


def test_missing_patch_in_series(tmp_path: Path) -> None:
    d = tmp_path / "s"
    write_series(d, ["0001-gone.patch"])
    with pytest.raises(PyksmError, match=r"series:2: patch '0001-gone\.patch' does not exist"):
        patches.read_series(d)


def test_digest_follows_patch_content(tmp_path: Path) -> None:
    p = make_patch(tmp_path, "0001-b.patch", "f", "a\n", "b\n")
    write_series(p.parent, [p.name])
    d1 = patches.read_series(p.parent).digest
    p.write_text(p.read_text() + "\n")
    assert patches.read_series(p.parent).digest != d1


def test_touched_files_handles_new_and_deleted(tmp_path: Path) -> None:
    p = tmp_path / "x.patch"
    p.write_text(
        "--- /dev/null\n+++ b/mm/new.c\n@@ -0,0 +1 @@\n+x\n"
        "--- a/mm/old.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-y\n"
    )
    assert patches.touched_files(p) == {"mm/new.c", "mm/old.c"}


def test_makefile_pins_the_kernel_source_the_series_targets() -> None:
    """`make setup` installs the one linux-source-6.12 the series is for:
    Debian's security updates move the package on (6.12.118 replaced
    6.12.117 on a fresh machine, and the build refused the tree)."""
    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text()
    pins = dict(re.findall(r"^(KERNEL_SOURCE_\w+)\s*:=\s*(\S+)", makefile, re.M))
    series = patches.read_series(root / "kernel-patches")
    assert pins["KERNEL_SOURCE_PACKAGE"] == source.PACKAGE
    assert series.target_version is not None
    assert pins["KERNEL_SOURCE_VERSION"].startswith(series.target_version + "-")
    # The generic list must not install the newest one beside the pin.
    apt_list = re.search(r"^APT_PACKAGES := (.*?)(?<!\\)\n", makefile, re.M | re.S)
    assert apt_list is not None
    assert source.PACKAGE not in apt_list.group(1).split()

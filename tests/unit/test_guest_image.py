"""The guest images without QEMU: the guest kernel's config and build
request, the initramfs and disk builders, their cache keys."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import guest_image as gi
from pyksm.lab import kconfig

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "kernel-patches" / "config"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PYKSM_CACHE", str(root))
    return root


def test_the_guest_kernel_is_guest_config_alone_and_never_patched() -> None:
    assert kconfig.fragments_for(CONFIG, "guest", patched=True) == [CONFIG / "guest.config"]
    req = kbuild.GUEST
    assert req.vanilla and req.variant == "guest" and req.name == "vanilla-guest"
    assert not req.with_selftests and kbuild.BuildRequest().with_selftests
    assert req.fragments() == [CONFIG / "guest.config"]
    assert kbuild.build_command(req) == "pyksm kernel build --guest"
    assert "guest" not in kbuild.VARIANTS  # virtme-ng and Vagrant cannot boot it


def test_guest_config_asks_for_what_the_agent_and_disk_need() -> None:
    reqs = {r.option: r.value for r in kconfig.parse_fragment(CONFIG / "guest.config")}
    for opt in (
        "64BIT", "PRINTK", "BLK_DEV_INITRD", "RD_GZIP", "BINFMT_ELF", "BINFMT_SCRIPT",
        "PROC_FS", "PROC_SYSCTL", "SYSFS", "DEVTMPFS", "TTY", "SERIAL_8250",
        "SERIAL_8250_CONSOLE", "PCI", "VIRTIO", "VIRTIO_PCI", "BLOCK", "VIRTIO_BLK",
        "EXT4_FS", "ACPI",
    ):  # fmt: skip
        assert reqs.get(f"CONFIG_{opt}") == "y", opt
    assert reqs["CONFIG_VIRTIO_BALLOON"] is None
    # none of the test kernel's heavy parts
    for heavy in ("DEBUG_INFO_BTF", "IKHEADERS", "KSM", "BPF_SYSCALL", "KASAN", "NET"):
        assert f"CONFIG_{heavy}" not in reqs, heavy


def test_the_guest_build_key_differs_from_the_vanilla_test_kernel() -> None:
    from pyksm.lab import patches

    series = patches.read_series(REPO / "kernel-patches")
    assert kbuild.build_key(kbuild.GUEST, series) != kbuild.build_key(
        kbuild.VARIANTS["vanilla"], series
    )


def _fake_busybox(tmp_path: Path, static: bool = True) -> Path:
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF" + (b"" if static else b"/lib64/ld-linux-x86-64.so.2") + b"\0" * 64)
    return bb


def _cpio_names(path: Path) -> list[str]:
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=gzip.decompress(path.read_bytes()), capture_output=True
    )
    return sorted(listing.stdout.decode().split())


@pytest.mark.skipif(not shutil.which("cpio"), reason="no cpio")
def test_initramfs_holds_busybox_and_the_agent_and_is_cached_by_content(
    tmp_path: Path, cache: Path
) -> None:
    agent = tmp_path / "init"
    agent.write_text("#!/bin/busybox sh\necho '@pyksm READY'\n")
    bb = _fake_busybox(tmp_path)
    first = gi.build_initramfs(agent, bb)
    assert first.parent == cache / "guest-images"
    names = _cpio_names(first)
    for want in ("bin/busybox", "init", "dev", "proc", "sys", "mnt", "tmp"):
        assert want in names
    assert gi.build_initramfs(agent, bb) == first  # cached
    agent.write_text("#!/bin/busybox sh\necho '@pyksm READY agent=2'\n")
    assert gi.build_initramfs(agent, bb) != first  # a new agent is a new image
    assert list((cache / "guest-images").glob(".initramfs-*")) == []  # no temp dir left


def test_a_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    agent = tmp_path / "init"
    agent.write_text("#!/bin/busybox sh\n")
    with pytest.raises(PyksmError, match="not a static ELF"):
        gi.build_initramfs(agent, _fake_busybox(tmp_path, static=False))
    with pytest.raises(PyksmError, match="cannot read"):
        gi.build_initramfs(tmp_path / "missing", _fake_busybox(tmp_path))


def test_initramfs_key_covers_agent_and_busybox() -> None:
    k = gi.initramfs_key(b"agent", b"bb")
    assert k == gi.initramfs_key(b"agent", b"bb")
    assert len({k, gi.initramfs_key(b"agent2", b"bb"), gi.initramfs_key(b"agent", b"bb2")}) == 3


def test_disk_key_covers_content_and_size() -> None:
    r = gi.DiskRecipe()
    keys = {
        gi.disk_key(r, "linux-source-6.12=6.12.117-1"),
        gi.disk_key(r, "linux-source-6.12=6.12.118-1"),
        gi.disk_key(gi.DiskRecipe(size_mib=512), "linux-source-6.12=6.12.117-1"),
        gi.disk_key(gi.DiskRecipe(subdirs=("mm",)), "linux-source-6.12=6.12.117-1"),
    }
    assert len(keys) == 4
    assert gi.disk_key(r, "x") == gi.disk_key(gi.DiskRecipe(), "x")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"size_mib": 8}, "at least 16 MiB"),
        ({"subdirs": ("../etc",)}, "inside the tree"),
        ({"subdirs": ("/usr",)}, "inside the tree"),
    ],
)
def test_bad_disk_recipes(kw: dict[str, object], match: str) -> None:
    with pytest.raises(PyksmError, match=match):
        gi.DiskRecipe(**kw)  # type: ignore[arg-type]


def test_select_files_counts_whole_blocks_and_keeps_the_order() -> None:
    files = [("a", 1), ("b", 4097), ("c", 10_000), ("d", 0), ("e", 4096)]
    # a: 1 block, b: 2, c: 3 (does not fit in 4), d: 1, e: 1 (does not fit)
    assert gi.select_files(iter(files), 4 * 4096) == [("a", 1), ("b", 4097), ("d", 0)]
    assert gi.blocks(0) == gi.blocks(1) == 4096


def test_mke2fs_argv_is_reproducible_and_needs_no_mount() -> None:
    argv = gi.mke2fs_argv(Path("/c/disk.ext4"), Path("/c/root"), 256, "0123456789abcdef")
    assert argv == gi.mke2fs_argv(Path("/c/disk.ext4"), Path("/c/root"), 256, "0123456789abcdef")
    assert argv[0] == "mke2fs" and argv[-2:] == ["/c/disk.ext4", "256M"]
    assert argv[argv.index("-t") + 1] == "ext4"
    assert argv[argv.index("-d") + 1] == "/c/root"
    uuid = argv[argv.index("-U") + 1]
    assert f"hash_seed={uuid}" in argv[argv.index("-E") + 1]
    assert (
        uuid != gi.mke2fs_argv(Path("d"), Path("r"), 256, "fedcba9876543210")[argv.index("-U") + 1]
    )


MKE2FS = shutil.which("mke2fs", path="/usr/sbin:/sbin:/usr/bin")
DEBUGFS = shutil.which("debugfs", path="/usr/sbin:/sbin:/usr/bin")


@pytest.mark.skipif(not (MKE2FS and DEBUGFS), reason="no e2fsprogs")
def test_a_disk_from_a_directory_holds_its_files_in_order_until_full(
    tmp_path: Path, cache: Path
) -> None:
    tree = tmp_path / "tree"
    for sub, n in (("src", 3), ("doc", 2)):
        (tree / sub / "deep").mkdir(parents=True)
        for i in range(n):
            (tree / sub / "deep" / f"f{i}.txt").write_text(f"{sub} {i}\n" * 1000)
    (tree / "src" / "link").symlink_to("deep/f0.txt")
    (tree / "skipped").mkdir()
    (tree / "skipped" / "x").write_text("not asked for")
    recipe = gi.DiskRecipe(size_mib=16, tree=tree, subdirs=("src", "doc"))
    disk = gi.build_disk(recipe)
    assert disk.path.exists() and disk.path.stat().st_size == 16 << 20
    assert disk.files == 5 and disk.top == {"src": 3, "doc": 2}
    assert disk.file_bytes == sum(
        len(f"{s} {i}\n") * 1000 for s, n in (("src", 3), ("doc", 2)) for i in range(n)
    )
    assert disk.manifest.exists()
    ls = subprocess.run(
        [str(DEBUGFS), "-R", "ls -p /src/deep", str(disk.path)], capture_output=True, text=True
    ).stdout
    assert "f2.txt" in ls
    cat = subprocess.run(
        [str(DEBUGFS), "-R", "cat /doc/deep/f1.txt", str(disk.path)], capture_output=True, text=True
    ).stdout
    assert cat == "doc 1\n" * 1000
    fsck = subprocess.run(
        [shutil.which("e2fsck", path="/usr/sbin:/sbin") or "e2fsck", "-fn", str(disk.path)],
        capture_output=True,
    )
    assert fsck.returncode == 0
    again = gi.build_disk(recipe)  # cached: same image, not rebuilt
    assert again.path == disk.path and again.path.stat().st_mtime == disk.path.stat().st_mtime
    assert list((cache / "guest-images").glob(".disk-*")) == []
    (tree / "doc" / "deep" / "f9.txt").write_text("new")
    assert gi.build_disk(recipe).key != disk.key  # the tree changed: a new disk


def test_a_missing_subdir_or_tree_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    with pytest.raises(PyksmError, match="no such directory in the disk's source tree"):
        gi.build_disk(gi.DiskRecipe(size_mib=16, tree=tmp_path / "t", subdirs=("nope",)))
    with pytest.raises(PyksmError, match="is not a directory"):
        gi.build_disk(gi.DiskRecipe(size_mib=16, tree=tmp_path / "missing"))

"""``pyksm guest-image build``: what a real-QEMU guest boots and reads.

Three artifacts, each cached under ``$PYKSM_CACHE`` and keyed by what goes
into it, so a second call with nothing changed only hashes a few files:

- the kernel: the ``guest`` variant of ``pyksm kernel build`` (vanilla,
  ``kernel-patches/config/guest.config`` on tinyconfig; through the lab's
  build cache and its machine-wide lock);
- the initramfs: static busybox and the agent ``vm-images/qemu-guest/init``
  (``guest-images/initramfs-<key>.cpio.gz``, key = agent + busybox);
- the shared disk: an ext4 image of a real file tree made without mounting
  (``mke2fs -d``), by default a deterministic subset of Debian's
  linux-source-6.12 tree (``guest-images/disk-<key>/disk.ext4`` with a
  ``manifest.json``; key = content recipe + size).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from pyksm.cache import cache_root
from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import source

__all__ = [
    "BLOCK",
    "DEFAULT_SUBDIRS",
    "DiskImage",
    "DiskRecipe",
    "GuestImage",
    "agent_path",
    "build_all",
    "build_disk",
    "build_initramfs",
    "build_kernel",
    "disk_key",
    "initramfs_key",
    "mke2fs_argv",
    "select_files",
]

# Bump when the image steps change in a way that changes the artifacts.
RECIPE = "1"
BLOCK = 4096
# The linux tree's directories in the order a build reads them first; the
# disk takes whole files from them, in this order, until its budget is spent.
DEFAULT_SUBDIRS = ("include", "kernel", "mm", "fs", "lib", "block", "arch/x86", "net", "drivers")
# The files may use this share of the filesystem; inode tables, the journal
# and directories need the rest.
FILL = 0.80
MIN_DISK_MIB = 16


def images_root() -> Path:
    path = cache_root() / "guest-images"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _images_lock() -> Iterator[None]:
    """One image builder at a time: a finished image is never replaced under a guest."""
    with open(images_root() / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def agent_path() -> Path:
    """The guest's /init: busybox sh, commands and replies on ttyS0."""
    return kbuild.repo_root() / "vm-images" / "qemu-guest" / "init"


def busybox_path() -> Path:
    """Debian's busybox-static (a dynamically linked busybox would not run)."""
    for cand in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if cand.is_file():
            return cand
    found = shutil.which("busybox")
    if not found:
        raise PyksmError("busybox not found", hint="apt-get install busybox-static (make setup)")
    return Path(found)


def build_kernel(console: Console | None = None) -> kbuild.KernelBuild:
    """The guest kernel (cached; waits for the build lock like every build)."""
    return kbuild.build(kbuild.GUEST, console)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def initramfs_key(agent: bytes, busybox: bytes) -> str:
    return _digest(RECIPE.encode(), agent, busybox)


def build_initramfs(agent: Path | None = None, busybox: Path | None = None) -> Path:
    """A gzip'ed newc cpio: /bin/busybox, /init (the agent), empty mount points."""
    agent = agent or agent_path()
    busybox = busybox or busybox_path()
    try:
        agent_text, bb = agent.read_bytes(), busybox.read_bytes()
    except OSError as e:
        raise PyksmError(f"cannot read {e.filename}: {e.strerror}") from None
    if not _is_static_elf(bb):
        raise PyksmError(
            f"{busybox} is not a static ELF binary",
            hint="apt-get install busybox-static (make setup)",
        )
    out = images_root() / f"initramfs-{initramfs_key(agent_text, bb)}.cpio.gz"
    if out.exists():
        return out
    with _images_lock():
        if not out.exists():  # another builder may have made it meanwhile
            _write_initramfs(out, agent_text, bb)
    return out


def _write_initramfs(out: Path, agent_text: bytes, bb: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=images_root(), prefix=".initramfs-") as tmp:
        tree = Path(tmp) / "tree"
        for d in ("bin", "dev", "proc", "sys", "mnt", "tmp"):
            (tree / d).mkdir(parents=True)
        (tree / "bin" / "busybox").write_bytes(bb)
        (tree / "bin" / "busybox").chmod(0o755)
        (tree / "init").write_bytes(agent_text)
        (tree / "init").chmod(0o755)
        names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
        proc = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "--owner=0:0"],
            input="\n".join(names).encode(),
            cwd=tree,
            capture_output=True,
        )
        if proc.returncode != 0:
            raise PyksmError(f"cpio failed: {proc.stderr.decode(errors='replace').strip()}")
        part = Path(tmp) / "initramfs.cpio.gz"
        with gzip.GzipFile(part, "wb", mtime=0) as f:
            f.write(proc.stdout)
        part.replace(out)


def _is_static_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data[:4096]


@dataclass(frozen=True)
class DiskRecipe:
    """What goes on the shared disk: files of ``tree`` (default: the linux
    source), walked in ``subdirs`` order, until FILL of ``size_mib`` is used."""

    size_mib: int = 256
    tree: Path | None = None  # None: Debian's linux-source-6.12, unpacked by pyksm.lab.source
    subdirs: tuple[str, ...] = DEFAULT_SUBDIRS

    def __post_init__(self) -> None:
        if self.size_mib < MIN_DISK_MIB:
            raise PyksmError(f"disk size {self.size_mib} MiB: at least {MIN_DISK_MIB} MiB")
        for d in self.subdirs:
            if not d or d.startswith("/") or ".." in Path(d).parts:
                raise PyksmError(f"disk subdirectory {d!r}: give a path inside the tree")

    @property
    def budget(self) -> int:
        """Bytes the files may take, counted in whole blocks."""
        return int((self.size_mib << 20) * FILL)


@dataclass
class DiskImage:
    """A built disk: ``path`` (raw ext4) and what it holds."""

    path: Path
    key: str
    size_mib: int
    source: str
    subdirs: list[str]
    files: int
    file_bytes: int
    top: dict[str, int] = field(default_factory=dict)  # files per top directory

    @property
    def manifest(self) -> Path:
        return self.path.with_name("manifest.json")

    def save(self) -> None:
        data = asdict(self)
        data["path"] = str(self.path)
        self.manifest.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, manifest: Path) -> DiskImage:
        data = json.loads(manifest.read_text())
        data["path"] = Path(data["path"])
        return cls(**data)


def _source_identity(recipe: DiskRecipe) -> str:
    """What names the tree's content: the package version, or the directory's
    file names, sizes and mtimes (a local tree can change under us)."""
    if recipe.tree is None:
        return f"{source.PACKAGE}={source.package_version()}"
    h = hashlib.sha256(str(recipe.tree.resolve()).encode())
    for rel, size in _walk(recipe.tree, recipe.subdirs):
        st = (recipe.tree / rel).stat()
        h.update(f"{rel}\0{size}\0{int(st.st_mtime)}\n".encode())
    return "dir:" + h.hexdigest()


def disk_key(recipe: DiskRecipe, identity: str) -> str:
    parts = [RECIPE, identity, str(recipe.size_mib), ",".join(recipe.subdirs), str(FILL)]
    return _digest("\0".join(parts).encode())


def _walk(tree: Path, subdirs: tuple[str, ...]) -> Iterator[tuple[str, int]]:
    """(relative path, size) of regular files under each subdir, sorted; each once."""
    seen: set[str] = set()
    for sub in subdirs:
        top = tree / sub
        if not top.is_dir():
            raise PyksmError(f"{top}: no such directory in the disk's source tree")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                rel = str(p.relative_to(tree))
                if rel in seen or p.is_symlink() or not p.is_file():
                    continue
                seen.add(rel)
                yield rel, p.stat().st_size


def blocks(size: int) -> int:
    """Bytes a file of ``size`` takes on ext4 (tiny files still take a block)."""
    return max(1, -(-size // BLOCK)) * BLOCK


def select_files(files: Iterator[tuple[str, int]], budget: int) -> list[tuple[str, int]]:
    """The files, in order, that fit in ``budget`` (whole blocks); others skipped."""
    chosen: list[tuple[str, int]] = []
    used = 0
    for rel, size in files:
        need = blocks(size)
        if used + need <= budget:
            chosen.append((rel, size))
            used += need
    return chosen


def mke2fs_argv(image: Path, root: Path, size_mib: int, key: str) -> list[str]:
    """mke2fs that populates the filesystem from ``root`` (no mount, no root
    needed), reproducibly: fixed UUID and hash seed from the key."""
    fs_uuid = str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))
    return [
        "mke2fs",
        "-q",
        "-F",
        "-t", "ext4",
        "-b", str(BLOCK),
        "-m", "0",
        "-L", "pyksm-data",
        "-U", fs_uuid,
        "-E", f"hash_seed={fs_uuid},root_owner=0:0",
        "-d", str(root),
        str(image),
        f"{size_mib}M",
    ]  # fmt: skip


def build_disk(recipe: DiskRecipe | None = None) -> DiskImage:
    """The shared disk for ``recipe`` (cached by content recipe and size)."""
    recipe = recipe or DiskRecipe()
    mke2fs = shutil.which("mke2fs", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if not mke2fs:
        raise PyksmError("mke2fs not found", hint="apt-get install e2fsprogs (make setup)")
    if recipe.tree is not None and not recipe.tree.is_dir():
        raise PyksmError(f"disk source {recipe.tree} is not a directory")
    key = disk_key(recipe, _source_identity(recipe))
    dest = images_root() / f"disk-{key}"
    if (dest / "manifest.json").exists() and (dest / "disk.ext4").exists():
        return DiskImage.load(dest / "manifest.json")
    with _images_lock():
        if (dest / "manifest.json").exists() and (dest / "disk.ext4").exists():
            return DiskImage.load(dest / "manifest.json")
        return _make_disk(recipe, key, dest)


def _make_disk(recipe: DiskRecipe, key: str, dest: Path) -> DiskImage:
    mke2fs = shutil.which("mke2fs", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert mke2fs is not None  # checked by build_disk
    tree = recipe.tree
    if tree is None:
        tree = source.unpack(cache_root(), None).path
    chosen = select_files(_walk(tree, recipe.subdirs), recipe.budget)
    if not chosen:
        raise PyksmError(f"no file of {tree} ({', '.join(recipe.subdirs)}) fits the disk")
    with tempfile.TemporaryDirectory(dir=images_root(), prefix=".disk-") as tmp:
        stage = Path(tmp) / "root"
        top: dict[str, int] = {}
        for rel, _ in chosen:
            dst = stage / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(tree / rel, dst)
            first = rel.split("/", 1)[0]
            top[first] = top.get(first, 0) + 1
        part = Path(tmp) / "out"
        part.mkdir()
        image = part / "disk.ext4"
        argv = mke2fs_argv(image, stage, recipe.size_mib, key)
        argv[0] = mke2fs
        env = dict(os.environ, E2FSPROGS_FAKE_TIME="1700000000")  # reproducible superblock
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise PyksmError(
                f"mke2fs failed: {(proc.stderr or proc.stdout).strip()[-300:]}",
                hint="a larger --size-mib" if "llocat" in proc.stderr else None,
            )
        disk = DiskImage(
            path=dest / "disk.ext4",
            key=key,
            size_mib=recipe.size_mib,
            source=str(tree) if recipe.tree is not None else source.PACKAGE,
            subdirs=list(recipe.subdirs),
            files=len(chosen),
            file_bytes=sum(size for _, size in chosen),
            top=top,
        )
        disk.path = image
        disk.save()
        shutil.rmtree(dest, ignore_errors=True)
        part.rename(dest)
    disk.path = dest / "disk.ext4"
    disk.save()
    return disk


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link when the tree is on the cache's filesystem, else a copy."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
            raise PyksmError(f"cannot stage {src}: {e.strerror}") from None
        shutil.copyfile(src, dst)


@dataclass
class GuestImage:
    """Everything one guest boots: kernel, initramfs, shared disk."""

    bzimage: Path
    initramfs: Path
    disk: DiskImage
    kernel_release: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "bzimage": str(self.bzimage),
            "initramfs": str(self.initramfs),
            "kernel_release": self.kernel_release,
            "disk": {**asdict(self.disk), "path": str(self.disk.path)},
        }

    def save(self, path: Path) -> None:
        """As JSON (what the runner in the test VM boots, built on the host)."""
        path.write_text(json.dumps(self.as_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> GuestImage:
        """One saved by :meth:`save`; its files must exist."""
        try:
            doc = json.loads(path.read_text())
            disk = dict(doc["disk"])
            disk["path"] = Path(disk["path"])
            image = cls(
                Path(doc["bzimage"]),
                Path(doc["initramfs"]),
                DiskImage(**disk),
                str(doc.get("kernel_release", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PyksmError(f"{path}: not a saved guest image ({e})") from None
        for f in (image.bzimage, image.initramfs, image.disk.path):
            if not f.exists():
                raise PyksmError(f"{path}: {f} is missing", hint="pyksm guest-image build")
        return image


def build_all(recipe: DiskRecipe | None = None, console: Console | None = None) -> GuestImage:
    """Kernel, initramfs and disk (each from its cache when nothing changed)."""
    kernel = build_kernel(console)
    initrd = build_initramfs()
    disk = build_disk(recipe)
    return GuestImage(kernel.bzimage, initrd, disk, kernel.release)

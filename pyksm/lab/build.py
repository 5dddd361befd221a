"""``pyksm kernel build``: source -> patches -> config -> bzImage -> selftests.

Each stage is timed and fails with its own message; the finished build is
cached under ``builds/<key>`` where the key covers the source version, the
series content, the config fragments and the variant. A second call with
nothing changed only hashes a few small files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pyksm.cache import cache_root
from pyksm.errors import PyksmError
from pyksm.lab import kconfig, patches, source

# Bump when the build steps change in a way that changes the artifacts.
RECIPE = "3"
SELFTESTS = ("ksm_tests", "ksm_functional_tests", "ksm_hints_tests")
ARCH = "x86_64"


@contextlib.contextmanager
def build_lock(root: Path | None = None) -> Iterator[None]:
    """Hold the machine-wide kernel build lock.

    Two kernel builds on a 2-core machine only slow each other down; every
    builder (pyksm and developers' shells via ``flock``) takes this lock.
    """
    path = (root or cache_root()) / "build.lock"
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def repo_root() -> Path:
    """The checkout holding ``kernel-patches/`` (this package's parent)."""
    env = os.environ.get("PYKSM_REPO")
    return Path(env) if env else Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BuildRequest:
    variant: str = "test"  # "test", "debug" or "guest" (kconfig.VARIANTS)
    vanilla: bool = False
    jobs: int = field(default_factory=lambda: os.cpu_count() or 2)
    patches_dir: Path = field(default_factory=lambda: repo_root() / "kernel-patches")
    extra_fragments: tuple[Path, ...] = ()

    def fragments(self) -> list[Path]:
        base = kconfig.fragments_for(self.patches_dir / "config", self.variant, not self.vanilla)
        for f in self.extra_fragments:
            if not f.is_file():
                raise PyksmError(f"config fragment {f} not found")
        return [*base, *self.extra_fragments]

    @property
    def with_selftests(self) -> bool:
        """The guest kernel runs busybox only: no KSM selftests to build for it."""
        return self.variant != "guest"

    @property
    def flavor(self) -> str:
        return "vanilla" if self.vanilla else "patched"

    @property
    def name(self) -> str:
        """Object-tree name; builds with extra fragments get their own tree."""
        name = f"{self.flavor}-{self.variant}"
        if self.extra_fragments:
            h = hashlib.sha256(b"".join(f.read_bytes() for f in self.extra_fragments))
            name += "-custom-" + h.hexdigest()[:8]
        return name


# The kernels by name (``pyksm vm run --kernel``, ``PYKSM_VAGRANT_KERNEL``).
VARIANTS: dict[str, BuildRequest] = {
    "test": BuildRequest(),
    "patched": BuildRequest(),
    "debug": BuildRequest(variant="debug"),
    "vanilla": BuildRequest(vanilla=True),
    "vanilla-debug": BuildRequest(variant="debug", vanilla=True),
}

# The real-QEMU guests' kernel (``pyksm kernel build --guest``): guest.config
# alone on the unpatched tree. Not in VARIANTS: virtme-ng and the Vagrant box
# need far more than it has.
GUEST = BuildRequest(variant="guest", vanilla=True)


def build_command(req: BuildRequest) -> str:
    """The ``pyksm kernel build`` command line that builds ``req``."""
    if req.variant == "guest":
        return "pyksm kernel build --guest"
    flags = (" --debug" if req.variant == "debug" else "") + (" --vanilla" if req.vanilla else "")
    return "pyksm kernel build" + flags


@dataclass
class KernelBuild:
    """A finished, cached build."""

    key: str
    name: str
    path: Path
    version: str
    variant: str
    flavor: str
    release: str = ""
    series: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    selftests: list[str] = field(default_factory=list)
    objdir: str = ""

    @property
    def bzimage(self) -> Path:
        return self.path / "bzImage"

    @property
    def config(self) -> Path:
        return self.path / "config"

    def selftest(self, name: str) -> Path:
        return self.path / "selftests" / name

    @classmethod
    def load(cls, path: Path) -> KernelBuild:
        data = json.loads((path / "build.json").read_text())
        data["path"] = path
        return cls(**data)

    def save(self) -> None:
        data = asdict(self)
        data["path"] = str(self.path)
        (self.path / "build.json").write_text(json.dumps(data, indent=2) + "\n")


class BuildFailed(PyksmError):
    def __init__(self, stage: str, log: Path, tail: str) -> None:
        super().__init__(
            f"kernel build failed in stage '{stage}'\n--- last lines of {log} ---\n{tail}",
            hint=f"full log: {log}",
        )
        self.stage = stage
        self.log = log


def build_key(req: BuildRequest, series: patches.Series) -> str:
    h = hashlib.sha256()
    tarball = source.find_tarball(install=False) if _tarball_present() else None
    st = tarball.stat() if tarball else None
    parts = [
        RECIPE,
        ARCH,
        req.variant,
        req.flavor,
        source.package_version(),
        f"{st.st_size}:{int(st.st_mtime)}" if st else "no-tarball",
        "" if req.vanilla else series.digest,
    ]
    for p in req.fragments():
        parts.append(p.name)
        parts.append(hashlib.sha256(p.read_bytes()).hexdigest())
    h.update("\0".join(parts).encode())
    return h.hexdigest()[:16]


def _tarball_present() -> bool:
    try:
        source.find_tarball(install=False)
    except PyksmError:
        return False
    return True


def cached(req: BuildRequest) -> KernelBuild | None:
    series = patches.read_series(req.patches_dir)
    key = build_key(req, series)
    path = cache_root() / "builds" / f"{req.name}-{key}"
    if (path / "build.json").exists() and (path / "bzImage").exists():
        return KernelBuild.load(path)
    return None


class _Runner:
    """Runs commands into one log file while a rich spinner shows the stage."""

    def __init__(self, log: Path, console: Console) -> None:
        self.log = log
        self.console = console
        self.stages: dict[str, float] = {}
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def stage(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.monotonic()
        with self.log.open("a") as fh:
            fh.write(f"\n### stage {name}\n")
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TimeElapsedColumn(),
            TextColumn("[dim]{task.fields[last]}"),
            console=self.console,
            transient=True,
        ) as progress:
            self._task = progress.add_task(name, last="")
            self._progress = progress
            try:
                fn()
            except subprocess.CalledProcessError:
                raise BuildFailed(name, self.log, self.tail()) from None
        self.stages[name] = round(time.monotonic() - t0, 1)
        self.console.print(f"  [green]✓[/] {name:<10} {self.stages[name]:7.1f} s")

    def run(self, argv: Sequence[str], cwd: Path | None = None) -> None:
        with self.log.open("a") as fh:
            fh.write("$ " + " ".join(argv) + "\n")
            fh.flush()
            # Its own process group: an interrupted build takes make's whole
            # tree down with it instead of leaving it running in the objdir.
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                while proc.poll() is None:
                    time.sleep(0.5)
                    self._progress.update(self._task, last=self._last_line())
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
                raise
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, list(argv))

    def _last_line(self) -> str:
        try:
            with self.log.open("rb") as fh:
                fh.seek(max(0, self.log.stat().st_size - 200))
                lines = fh.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:70] if lines else ""

    def tail(self, n: int = 30) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


def configure(run: _Runner, make: list[str], tree: Path, obj: Path, fragments: list[Path]) -> None:
    """tinyconfig + fragments + olddefconfig, then prove nothing was dropped."""
    run.run([*make, "tinyconfig"])
    merge = tree / "scripts/kconfig/merge_config.sh"
    run.run(
        ["sh", str(merge), "-m", "-O", str(obj), str(obj / ".config"), *map(str, fragments)],
        cwd=tree,
    )
    run.run([*make, "olddefconfig"])
    requests = [r for f in fragments for r in kconfig.parse_fragment(f)]
    final = kconfig.parse_config((obj / ".config").read_text())
    problems = kconfig.dropped(requests, final)
    if problems:
        raise PyksmError(
            "kconfig dropped a requested option: " + "; ".join(problems),
            hint="fix its dependencies in the fragment (make menuconfig shows them)",
        )


def build(req: BuildRequest, console: Console | None = None) -> KernelBuild:
    """Build (or fetch from the cache) the kernel and selftests for ``req``."""
    console = console or Console(stderr=True, soft_wrap=True)
    hit = cached(req)
    if hit:
        console.print(f"[green]cached[/] {hit.name} {hit.release} → {hit.path}")
        return hit
    root = cache_root()
    with build_lock(root):
        hit = cached(req)  # another builder may have finished it meanwhile
        if hit:
            return hit
        return _build_locked(req, root, console)


def _build_locked(req: BuildRequest, root: Path, console: Console) -> KernelBuild:
    series = patches.read_series(req.patches_dir)
    key = build_key(req, series)
    log = root / "logs" / f"{req.name}-{key}.log"
    run = _Runner(log, console)
    console.print(f"building [bold]{req.name}[/] kernel (key {key}, log {log})")

    src: list[source.KernelSource] = []
    run.stage("source", lambda: src.append(source.unpack(root, series.target_version)))
    pristine = src[0]
    tree = pristine.path
    if not req.vanilla:
        # Even an empty series builds in the patched copy, so that adding a
        # patch later rebuilds incrementally in the same object tree.
        tree = root / "src" / f"{pristine.path.name}-patched"
        run.stage("patches", lambda: patches.apply_series(pristine.path, tree, series))
    obj = root / "obj" / req.name
    obj.mkdir(parents=True, exist_ok=True)
    make = ["make", "-C", str(tree), f"O={obj}", f"ARCH={ARCH}", f"-j{req.jobs}"]
    fragments = req.fragments()
    run.stage("config", lambda: configure(run, make, tree, obj, fragments))
    run.stage("bzImage", lambda: run.run([*make, "bzImage"]))
    wanted = [t for t in SELFTESTS if (tree / "tools/testing/selftests/mm" / f"{t}.c").exists()]
    if not req.with_selftests:
        wanted = []
    st_out = obj / "selftests-mm"

    def selftests() -> None:
        run.run([*make, "headers"])
        st_out.mkdir(exist_ok=True)
        run.run(
            [
                "make",
                "-C",
                str(tree / "tools/testing/selftests/mm"),
                f"-j{req.jobs}",
                f"OUTPUT={st_out}",
                f"KHDR_INCLUDES=-isystem {obj}/usr/include",
                "EXTRA_CFLAGS=-static",
                *[str(st_out / t) for t in wanted],
            ]
        )

    if wanted:
        run.stage("selftests", selftests)
    release = (obj / "include/config/kernel.release").read_text().strip()
    dest = root / "builds" / f"{req.name}-{key}"
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "selftests").mkdir(parents=True)
    shutil.copy2(obj / "arch/x86/boot/bzImage", tmp / "bzImage")
    shutil.copy2(obj / ".config", tmp / "config")
    shutil.copy2(obj / "System.map", tmp / "System.map")
    for t in wanted:
        shutil.copy2(st_out / t, tmp / "selftests" / t)
    result = KernelBuild(
        key=key,
        name=req.name,
        path=dest,
        version=pristine.version,
        variant=req.variant,
        flavor=req.flavor,
        release=release,
        series=[p.name for p in series.patches] if not req.vanilla else [],
        stages=run.stages,
        selftests=wanted,
        objdir=str(obj),
    )
    result.path = tmp
    result.save()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    result.path = dest
    result.save()
    console.print(
        f"[green]built[/] {result.name} {release} in {sum(run.stages.values()):.0f} s → {dest}"
    )
    return result

"""The Vagrant lab: a Debian 12 VM (systemd, real disk) booting a pyksm kernel.

virtme-ng (:mod:`pyksm.lab.vm`) stays the fast path; this is the full-system
path. The pieces:

- ``vm-images/build-vagrant-box.sh`` builds the box ``pyksm/debian12``
  (debootstrap, qcow2, libvirt metadata) and ``vagrant box add``-s it.
- ``Vagrantfile`` (top level) boots the box with vagrant-libvirt, the kernel
  given directly to QEMU. It asks this module for its settings
  (``python -m pyksm.lab.vagrant settings``), so the kernel lookup, the KVM/TCG
  verdict and the ``PYKSM_VAGRANT_*`` parsing live in one tested place.
- Networking stays on this machine: libvirtd (and so QEMU and the isolated
  management network with its dnsmasq) runs inside the network namespace
  ``pyksm-vagrant``, which has nothing but ``lo`` and that network's bridge.
  Vagrant reaches the guest's sshd through ``ip netns exec pyksm-vagrant nc``.
  libvirt's default network is never started; a libvirtd found running in the
  root namespace is refused.

What can fail, each with the command that fixes it: vagrant, vagrant-libvirt,
libvirtd or nc missing (``make vagrant-setup``); the kernel not built
(``pyksm kernel build ...``); the box not added (``pyksm vagrant box``);
libvirtd not running (``pyksm vagrant up`` starts it in the namespace).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pyksm.cache import cache_root
from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild

__all__ = [
    "BOX_NAME",
    "NETNS",
    "Resolved",
    "Settings",
    "check_tools",
    "libvirtd_state",
    "parse_memory",
    "parse_settings",
    "resolve",
]

BOX_NAME = "pyksm/debian12"
NETNS = "pyksm-vagrant"
DOMAIN = "pyksm_default"  # libvirt domain: default_prefix "pyksm_" + machine "default"
LIBVIRTD_PID = Path("/run/libvirtd.pid")
VIRTLOGD_PID = Path("/run/virtlogd.pid")
BOOT_DIR = Path("/var/lib/libvirt/boot")  # readable by libvirt's QEMU user
CONSOLE_DIR = Path("/var/log/libvirt/qemu")
SETUP = "make vagrant-setup"

# kernel setting -> (build request, command that builds it)
KERNELS: dict[str, tuple[kbuild.BuildRequest, str]] = {
    name: (req, kbuild.build_command(req)) for name, req in kbuild.VARIANTS.items()
}

ENV_DOC = {
    "PYKSM_VAGRANT_KERNEL": "test (default), debug, vanilla, vanilla-debug, or a bzImage path",
    "PYKSM_VAGRANT_MEMORY": "guest memory: 4096 (MiB, default), 4096M, 6G",
    "PYKSM_VAGRANT_CPUS": "guest CPUs (default 2)",
    "PYKSM_VAGRANT_ACCEL": "auto (default: KVM only if a probe shows it works), kvm, tcg",
    "PYKSM_VAGRANT_CMDLINE": "extra kernel command line",
    "PYKSM_VAGRANT_BOX": f"box name (default {BOX_NAME})",
}


@dataclass(frozen=True)
class Settings:
    """What the user chose through ``PYKSM_VAGRANT_*``."""

    kernel: str = "test"
    memory_mib: int = 4096
    cpus: int = 2
    accel: str = "auto"
    cmdline: str = ""
    box: str = BOX_NAME


def parse_memory(text: str) -> int:
    """``4096``, ``4096M``, ``4G`` (also MiB/GiB) -> MiB."""
    m = re.fullmatch(r"\s*(\d+)\s*([MG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise PyksmError(
            f"PYKSM_VAGRANT_MEMORY={text!r} is not a size",
            hint="PYKSM_VAGRANT_MEMORY=4096 (MiB) or 4G",
        )
    n = int(m.group(1))
    mib = n * 1024 if m.group(2).upper() == "G" else n
    if mib < 512:
        raise PyksmError(
            f"PYKSM_VAGRANT_MEMORY={text!r}: {mib} MiB is too little for a systemd guest",
            hint="PYKSM_VAGRANT_MEMORY=2G or more",
        )
    return mib


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Read and check every ``PYKSM_VAGRANT_*`` variable; unknown ones are errors."""
    known = set(ENV_DOC) | {"PYKSM_VAGRANT_TEST", "PYKSM_VAGRANT_MIRROR", "PYKSM_VAGRANT_DISK_GB"}
    unknown = sorted(k for k in env if k.startswith("PYKSM_VAGRANT_") and k not in known)
    if unknown:
        raise PyksmError(
            f"unknown setting {', '.join(unknown)}",
            hint="known: " + ", ".join(sorted(ENV_DOC)),
        )
    d = Settings()
    kernel = env.get("PYKSM_VAGRANT_KERNEL", "").strip() or d.kernel
    if kernel not in KERNELS and "/" not in kernel:
        raise PyksmError(
            f"PYKSM_VAGRANT_KERNEL={kernel!r}: not a kernel variant or a path",
            hint="PYKSM_VAGRANT_KERNEL=" + "|".join(KERNELS) + "|/path/to/bzImage",
        )
    memory = d.memory_mib
    if env.get("PYKSM_VAGRANT_MEMORY", "").strip():
        memory = parse_memory(env["PYKSM_VAGRANT_MEMORY"])
    cpus = d.cpus
    if env.get("PYKSM_VAGRANT_CPUS", "").strip():
        text = env["PYKSM_VAGRANT_CPUS"].strip()
        if not text.isdigit() or not 1 <= int(text) <= 64:
            raise PyksmError(
                f"PYKSM_VAGRANT_CPUS={text!r}: want a number from 1 to 64",
                hint="PYKSM_VAGRANT_CPUS=2",
            )
        cpus = int(text)
    accel = env.get("PYKSM_VAGRANT_ACCEL", "").strip().lower() or d.accel
    if accel not in ("auto", "kvm", "tcg"):
        raise PyksmError(
            f"PYKSM_VAGRANT_ACCEL={accel!r}: want auto, kvm or tcg",
            hint="PYKSM_VAGRANT_ACCEL=auto",
        )
    return Settings(
        kernel=kernel,
        memory_mib=memory,
        cpus=cpus,
        accel=accel,
        cmdline=env.get("PYKSM_VAGRANT_CMDLINE", "").strip(),
        box=env.get("PYKSM_VAGRANT_BOX", "").strip() or d.box,
    )


@dataclass(frozen=True)
class Resolved:
    """Everything the Vagrantfile needs, as JSON."""

    kernel: str  # a copy of the bzImage that libvirt's QEMU user can read
    source_bzimage: str
    release: str
    driver: str  # libvirt domain type: "kvm" or "qemu" (TCG)
    cpu_mode: str
    accel_reason: str
    cmdline: str
    memory: int
    cpus: int
    box: str
    netns: str
    domain: str
    console_log: str
    proxy_command: str


def find_kernel(
    settings: Settings, cached: Callable[[kbuild.BuildRequest], kbuild.KernelBuild | None]
) -> tuple[Path, str]:
    """(bzImage, release) of the chosen kernel; never builds."""
    if settings.kernel in KERNELS:
        req, fix = KERNELS[settings.kernel]
        hit = cached(req)
        if hit is None:
            raise PyksmError(
                f"the {settings.kernel} kernel has not been built (PYKSM_VAGRANT_KERNEL)",
                hint=fix,
            )
        return hit.bzimage, hit.release
    path = Path(settings.kernel)
    if not path.is_file():
        raise PyksmError(f"PYKSM_VAGRANT_KERNEL: {path} is not a file", hint="pyksm kernel build")
    return path, bzimage_release(path)


def bzimage_release(path: Path) -> str:
    """``uname -r`` of an x86 bzImage, from its setup header ("" if not one)."""
    with path.open("rb") as fh:
        head = fh.read(0x10000)
    if head[0x202:0x206] != b"HdrS":
        return ""
    offset = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[offset : offset + 256].split(b"\0", 1)[0].decode(errors="replace")
    return text.split(" ", 1)[0]


def _accel(settings: Settings, bzimage: Path) -> tuple[bool, str]:
    if settings.accel != "auto":
        return settings.accel == "kvm", f"PYKSM_VAGRANT_ACCEL={settings.accel}"
    from pyksm.lab.accel import use_kvm

    return use_kvm(bzimage)


def libvirt_copy(bzimage: Path, boot_dir: Path = BOOT_DIR) -> Path:
    """Copy the kernel where libvirt's unprivileged QEMU can read it (not under /root)."""
    import hashlib

    digest = hashlib.sha256(bzimage.read_bytes()).hexdigest()[:12]
    dest = boot_dir / f"pyksm-{digest}.bzImage"
    if not dest.exists():
        boot_dir.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".tmp")
        shutil.copyfile(bzimage, tmp)
        tmp.chmod(0o644)
        tmp.rename(dest)
    return dest


def kernel_cmdline(extra: str = "") -> str:
    """Root on the whole virtio disk (the box has no partition table); serial console."""
    base = "root=/dev/vda rw rootwait console=tty0 console=ttyS0,115200 panic=-1"
    return f"{base} {extra}".strip()


def resolve(
    settings: Settings,
    cached: Callable[[kbuild.BuildRequest], kbuild.KernelBuild | None] = kbuild.cached,
    boot_dir: Path = BOOT_DIR,
) -> Resolved:
    bzimage, release = find_kernel(settings, cached)
    kvm, reason = _accel(settings, bzimage)
    return Resolved(
        kernel=str(libvirt_copy(bzimage, boot_dir)),
        source_bzimage=str(bzimage),
        release=release,
        driver="kvm" if kvm else "qemu",
        cpu_mode="host-passthrough" if kvm else "custom",
        accel_reason=reason,
        cmdline=kernel_cmdline(settings.cmdline),
        memory=settings.memory_mib,
        cpus=settings.cpus,
        box=settings.box,
        netns=NETNS,
        domain=DOMAIN,
        console_log=str(CONSOLE_DIR / f"{DOMAIN}-console.log"),
        proxy_command=f"ip netns exec {NETNS} nc %h %p",
    )


# --- host tools and the namespaced libvirtd -----------------------------------------------

Which = Callable[[str], str | None]
Run = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


def check_tools(which: Which = shutil.which, run: Run = _run, plugins: bool = True) -> None:
    """Every host program the lab needs, or the first one missing as an error."""
    for tool, what in (
        ("vagrant", "vagrant is not installed"),
        ("libvirtd", "libvirtd is not installed (libvirt-daemon-system)"),
        ("virsh", "virsh is not installed (libvirt-clients)"),
        ("nc", "nc is not installed (netcat-openbsd; Vagrant's SSH hop into the namespace)"),
        ("ip", "ip is not installed (iproute2)"),
    ):
        if which(tool) is None:
            raise PyksmError(what, hint=SETUP)
    if plugins:
        proc = run(["vagrant", "plugin", "list"])
        if "vagrant-libvirt" not in proc.stdout:
            raise PyksmError(
                "the vagrant-libvirt plugin is not installed (vagrant plugin list)", hint=SETUP
            )


@dataclass(frozen=True)
class LibvirtdState:
    running: bool
    pid: int = 0
    in_netns: bool = False

    def describe(self) -> str:
        if not self.running:
            return "libvirtd not running"
        where = f"namespace {NETNS}" if self.in_netns else "the ROOT network namespace"
        return f"libvirtd pid {self.pid} in {where}"


def _pid_alive(pidfile: Path) -> int:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return 0
    return pid


def _netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def libvirtd_state(pidfile: Path = LIBVIRTD_PID, netns: str = NETNS) -> LibvirtdState:
    pid = _pid_alive(pidfile)
    if not pid:
        return LibvirtdState(False)
    try:
        ours = os.stat(f"/run/netns/{netns}").st_ino == _netns_inode(pid)
    except OSError:
        ours = False
    return LibvirtdState(True, pid, ours)


def require_libvirtd() -> LibvirtdState:
    """The namespaced libvirtd, or an error that says how to get it."""
    state = libvirtd_state()
    if not state.running:
        raise PyksmError("libvirtd is not running", hint="pyksm vagrant up (starts it in a netns)")
    if not state.in_netns:
        raise PyksmError(
            f"{state.describe()}: the lab keeps VM traffic inside namespace {NETNS}",
            hint=f"stop it (kill {state.pid} or systemctl stop libvirtd), then: pyksm vagrant up",
        )
    return state


def start_libvirtd(log: Callable[[str], None] = print, timeout: float = 30.0) -> LibvirtdState:
    """Create the namespace and start virtlogd + libvirtd in it (idempotent)."""
    state = libvirtd_state()
    if state.running:
        return require_libvirtd()
    if os.geteuid() != 0:
        raise PyksmError("starting libvirtd in a network namespace needs root", hint="sudo -i")
    if not Path(f"/run/netns/{NETNS}").exists():
        subprocess.run(["ip", "netns", "add", NETNS], check=True)
        log(f"created network namespace {NETNS} (only lo; nothing routes out)")
    subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
    ns = ["ip", "netns", "exec", NETNS]
    if not _pid_alive(VIRTLOGD_PID):
        subprocess.run([*ns, "virtlogd", "-d"], check=True)
    subprocess.run([*ns, "libvirtd", "-d"], check=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        proc = _run(["virsh", "-c", "qemu:///system", "version"])
        if proc.returncode == 0:
            state = require_libvirtd()
            log(f"started {state.describe()}")
            return state
        time.sleep(0.5)
    raise PyksmError(f"libvirtd did not answer within {timeout:.0f} s", hint="libvirtd --verbose")


def stop_libvirtd(log: Callable[[str], None] = print) -> None:
    """Stop the namespaced daemons and remove the namespace (after ``destroy``)."""
    for pidfile in (LIBVIRTD_PID, VIRTLOGD_PID):
        pid = _pid_alive(pidfile)
        if pid:
            os.kill(pid, 15)
            log(f"stopped {pidfile.stem} (pid {pid})")
    if Path(f"/run/netns/{NETNS}").exists():
        subprocess.run(["ip", "netns", "del", NETNS], check=False)
        log(f"removed network namespace {NETNS}")


def box_added(box: str, run: Run = _run) -> bool:
    proc = run(["vagrant", "box", "list"])
    return any(line.split(" ", 1)[0] == box for line in proc.stdout.splitlines())


def box_volumes(box: str, names: Sequence[str]) -> list[str]:
    """Uploads of ``box`` among libvirt pool volume ``names``.

    vagrant-libvirt names them ``<box>_vagrant_box_image_<version>[_<mtime>]_box.img``
    with ``/`` spelled ``-VAGRANTSLASH-``; an unversioned box gets a new name at every
    ``vagrant box add``, so old uploads pile up (~800 MB each).
    """
    prefix = box.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
    return [n for n in names if n.startswith(prefix)]


def refresh_box_volume(box: str, log: Callable[[str], None] = print) -> None:
    """Drop old uploads of the box from libvirt's pool once the box was re-added.

    Only while no VM exists (a VM's disk is a snapshot backed by the upload).
    Stamps: ``added-box-key`` (the box script) and ``uploaded-box-key`` (here).
    """
    d = cache_root() / "vagrant"
    added = (d / "added-box-key").read_text().strip() if (d / "added-box-key").exists() else ""
    stamp = d / "uploaded-box-key"
    uploaded = stamp.read_text().strip() if stamp.exists() else ""
    if not added or added == uploaded:
        return
    virsh = ["virsh", "-c", "qemu:///system"]
    if _run([*virsh, "domstate", DOMAIN]).returncode == 0:
        return  # a VM still uses the old upload; `pyksm vagrant destroy` first
    _run([*virsh, "pool-start", "default"])  # inactive right after libvirtd starts
    listing = _run([*virsh, "vol-list", "default"])  # " Name  Path" table
    if listing.returncode != 0:
        return  # no pool yet: nothing uploaded
    names = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]
    for name in box_volumes(box, names):
        if _run([*virsh, "vol-delete", "--pool", "default", name]).returncode == 0:
            log(f"dropped an old upload of {box} from libvirt's pool: {name}")
    stamp.write_text(added + "\n")


def domain_running(domain: str = DOMAIN) -> bool:
    proc = _run(["virsh", "-c", "qemu:///system", "domstate", domain])
    return proc.returncode == 0 and "running" in proc.stdout


def vagrant_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VAGRANT_DEFAULT_PROVIDER", "libvirt")
    env["PYKSM_PYTHON"] = sys.executable
    return env


def vagrant(args: Sequence[str], capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``vagrant ARGS`` in the checkout (where the Vagrantfile is)."""
    return subprocess.run(
        ["vagrant", *args],
        cwd=kbuild.repo_root(),
        env=vagrant_env(),
        text=True,
        capture_output=capture,
        check=False,
    )


def guest_command(command: Sequence[str], results: str) -> str:
    """The shell line ``pyksm vagrant run`` executes in the VM."""
    cmd = " ".join(shlex.quote(c) for c in command)
    res = shlex.quote(results)
    return (
        f"mkdir -p {res} && cd /vagrant && sudo env PYKSM_RESULTS={res} PYKSM_BACKEND=vagrant {cmd}"
    )


def fetch_results(guest_dir: str, host_dir: Path) -> None:
    """Copy ``guest_dir`` from the VM into ``host_dir`` with rsync over Vagrant's SSH."""
    cfg = vagrant(["ssh-config"], capture=True)
    if cfg.returncode != 0:
        raise PyksmError("vagrant ssh-config failed: " + cfg.stderr.strip()[-300:])
    host_dir.mkdir(parents=True, exist_ok=True)
    cfg_file = cache_root() / "vagrant" / "ssh-config"
    cfg_file.parent.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(cfg.stdout)
    proc = subprocess.run(
        [
            "rsync",
            "-rlt",  # no owners: files come back as the host user's
            "--rsync-path=sudo rsync",
            "-e",
            f"ssh -F {cfg_file}",
            f"default:{guest_dir.rstrip('/')}/",
            f"{host_dir}/",
        ],
        check=False,
    )
    if proc.returncode != 0:
        raise PyksmError(f"copying {guest_dir} back from the VM failed (rsync {proc.returncode})")


def main(argv: list[str] | None = None) -> int:
    """``python -m pyksm.lab.vagrant settings``: JSON for the Vagrantfile."""
    args = argv if argv is not None else sys.argv[1:]
    if args != ["settings"]:
        print("usage: python -m pyksm.lab.vagrant settings", file=sys.stderr)
        return 2
    try:
        resolved = resolve(parse_settings(os.environ))
    except PyksmError as e:
        print(f"pyksm: error: {e}" + (f"\n  fix: {e.hint}" if e.hint else ""), file=sys.stderr)
        return 1
    print(json.dumps(asdict(resolved), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

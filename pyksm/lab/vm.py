"""``pyksm vm run``: boot a kernel with virtme-ng and run one command inside.

The guest sees a read-only view of this machine (same Python, venv, bcc); the
checkout and an output directory are shared read-write. The kernel console is
kept apart from the command's output (``console.log`` in the output
directory) and scanned for bug reports: an oops, KASAN/KFENCE report, lockdep
splat, WARN or hung task fails the run even when the command succeeded.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pyksm.errors import PyksmError
from pyksm.lab import accel, console
from pyksm.lab.build import repo_root

# QEMU options for instruction-counted guest time (VmRequest.icount): one
# guest nanosecond per guest instruction (TCG only, all vCPUs on one host
# thread), and an idle guest skips ahead to its next timer instead of
# sleeping. A guest task's CPU time then measures the work it did, whatever
# else loads this machine.
ICOUNT_QEMU_OPTS = ["-icount", "shift=0,sleep=off"]

# Exit codes of `pyksm vm run` besides the command's own.
EXIT_TIMEOUT = 124
EXIT_KERNEL_REPORT = 125


@dataclass
class VmRequest:
    bzimage: Path
    command: list[str]
    memory: str = "2G"
    cpus: int = 2
    numa: bool = False
    timeout: float = 900.0
    outdir: Path = field(default_factory=lambda: Path.cwd() / "pyksm-out")
    rwdirs: list[Path] = field(default_factory=list)
    append: list[str] = field(default_factory=list)
    cwd: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Extra QEMU arguments (vng --qemu-opts).
    qemu_opts: list[str] = field(default_factory=list)
    # Guest time counts guest instructions (ICOUNT_QEMU_OPTS; TCG even where
    # KVM works) on one vCPU, whatever ``cpus`` says: more would share one
    # host thread and each run at a fraction of the clock.
    icount: bool = False


@dataclass
class VmResult:
    exit_code: int  # the command's, or EXIT_TIMEOUT / EXIT_KERNEL_REPORT
    command_exit: int | None
    timed_out: bool
    reports: list[console.Report]
    console_log: Path
    output_log: Path
    accel: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def vng_binary() -> str:
    """``vng`` from this interpreter's environment (its helpers must be on PATH)."""
    here = Path(sys.executable).parent / "vng"
    if here.exists():
        return str(here)
    found = shutil.which("vng")
    if not found:
        raise PyksmError("virtme-ng (vng) is not installed", hint="make setup")
    return found


# numpy's AVX2 loops read an array's tail with masked loads
# (vpmaskmovq); Debian 12's QEMU 7.2 TCG faults on a masked-off lane that lies
# in an unmapped page, where hardware does not, so a numpy operation on an
# array ending just before an unmapped page killed the runner with SIGSEGV
# (in the oracle's snapshot of two 512 MiB guests; a float64 sum of 9 such
# elements reproduces it). Under TCG numpy keeps to its baseline (SSE4.2)
# loops; unknown names are ignored, so old and new numpy names are listed.
TCG_NUMPY_ENV = {
    "NPY_DISABLE_CPU_FEATURES": "AVX2 FMA3 AVX512F AVX512_SKX AVX512_CLX AVX512_CNL "
    "AVX512_ICL AVX512_SPR X86_V3 X86_V4"
}


def _guest_script(req: VmRequest, tcg: bool) -> str:
    # The guest imports pyksm from this checkout, not from wherever the venv's
    # editable install points (a git worktree's VM tests ran main's code).
    env = {"PYTHONPATH": str(repo_root())} | (TCG_NUMPY_ENV if tcg else {}) | req.env
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    cwd = shlex.quote(str(req.cwd or repo_root()))
    cmd = shlex.join(req.command)
    # The command's stderr joins its stdout: vng's stderr is the kernel console.
    return f"cd {cwd} && {'export ' + exports + ' && ' if exports else ''}{cmd} 2>&1"


def build_argv(req: VmRequest, kvm: bool) -> list[str]:
    argv = [
        vng_binary(),
        "--run",
        str(req.bzimage),
        "--verbose",
        "--memory",
        req.memory,
        "--cpus",
        "1" if req.icount else str(req.cpus),
    ]
    tcg = not kvm or req.icount
    if tcg:
        argv.append("--disable-kvm")
    dirs = [repo_root(), req.outdir, *req.rwdirs]
    seen: set[Path] = set()
    for d in dirs:
        d = d.resolve()
        if d not in seen:
            seen.add(d)
            argv.append(f"--rwdir={d}")
    append = list(req.append)
    if req.numa:
        append.append("numa=fake=2")
    # A hung task must be reported quickly, not after the default 120 s.
    append.append("hung_task_timeout_secs=60")
    for a in append:
        argv += ["--append", a]
    argv += ["--exec", _guest_script(req, tcg)]
    opts = [*req.qemu_opts, *(ICOUNT_QEMU_OPTS if req.icount else [])]
    if opts:  # vng wants these last
        argv += ["--qemu-opts", shlex.join(opts)]
    return argv


def _pump(src: IO[bytes], sinks: list[IO[bytes]]) -> None:
    for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
        for s in sinks:
            s.write(chunk)
            s.flush()


def run(req: VmRequest, show_console: bool = False) -> VmResult:
    if not req.bzimage.exists():
        raise PyksmError(f"kernel image {req.bzimage} not found", hint="pyksm kernel build")
    req.outdir.mkdir(parents=True, exist_ok=True)
    kvm, reason = (False, "icount needs TCG") if req.icount else accel.use_kvm(req.bzimage)
    argv = build_argv(req, kvm)
    console_log = req.outdir / "console.log"
    output_log = req.outdir / "output.log"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    t0 = time.monotonic()
    with console_log.open("wb") as clog, output_log.open("wb") as olog:
        clog.write(
            f"# accel: {'kvm' if kvm else 'tcg'} ({reason})\n# argv: {shlex.join(argv)}\n".encode()
        )
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        out_sinks: list[IO[bytes]] = [olog, sys.stdout.buffer]
        con_sinks: list[IO[bytes]] = [clog] + ([sys.stderr.buffer] if show_console else [])
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, out_sinks), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, con_sinks), daemon=True),
        ]
        for t in pumps:
            t.start()
        timed_out = False
        try:
            proc.wait(timeout=req.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # On every path (timeout, ^C, SIGTERM, and vng ending first: a vng
            # that is killed leaves its QEMU running, orphaned but still in
            # vng's process group) nothing of the VM's session is left. Only
            # then do the pumps see EOF; a pipe is closed only once its pump
            # has stopped (closing it under a blocked read1() waits for that
            # read, i.e. forever while QEMU lives).
            _kill(proc)
            for t in pumps:
                t.join(timeout=5)
            for pipe, t in zip((proc.stdout, proc.stderr), pumps, strict=True):
                if not t.is_alive():
                    pipe.close()
    seconds = time.monotonic() - t0
    reports = console.scan(console_log.read_text(errors="replace"))
    command_exit = None if timed_out else proc.returncode
    if timed_out:
        code = EXIT_TIMEOUT
    elif reports:
        code = EXIT_KERNEL_REPORT
    else:
        code = proc.returncode
    return VmResult(
        exit_code=code,
        command_exit=command_exit,
        timed_out=timed_out,
        reports=reports,
        console_log=console_log,
        output_log=output_log,
        accel="kvm" if kvm else "tcg+icount" if req.icount else "tcg",
        seconds=seconds,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL vng's whole process group (vng leads its own session), then
    reap vng; harmless when all of it has already exited."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def console_tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])

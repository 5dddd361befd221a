"""How `pyksm vm run` asks virtme-ng for a VM (pure argv assembly)."""

from __future__ import annotations

from pathlib import Path

from pyksm.lab import vm
from pyksm.lab.build import repo_root


def test_argv_has_console_shares_and_command(tmp_path: Path) -> None:
    req = vm.VmRequest(
        bzimage=tmp_path / "bzImage",
        command=["sh", "-c", "echo 'a b'"],
        memory="1G",
        cpus=2,
        numa=True,
        outdir=tmp_path / "out",
    )
    argv = vm.build_argv(req, kvm=False)
    assert "--disable-kvm" in argv and "--verbose" in argv
    assert argv[argv.index("--memory") + 1] == "1G"
    assert f"--rwdir={(tmp_path / 'out').resolve()}" in argv
    appended = [argv[i + 1] for i, a in enumerate(argv) if a == "--append"]
    assert "numa=fake=2" in appended
    script = argv[argv.index("--exec") + 1]
    assert script.endswith("sh -c 'echo '\"'\"'a b'\"'\"'' 2>&1")


def test_kvm_argv_does_not_disable_kvm(tmp_path: Path) -> None:
    req = vm.VmRequest(bzimage=tmp_path / "bzImage", command=["true"], outdir=tmp_path)
    assert "--disable-kvm" not in vm.build_argv(req, kvm=True)


def test_qemu_opts_go_last_as_one_argument(tmp_path: Path) -> None:
    req = vm.VmRequest(bzimage=tmp_path / "bzImage", command=["true"], outdir=tmp_path)
    assert "--qemu-opts" not in vm.build_argv(req, kvm=False)
    req.qemu_opts = ["-icount", "shift=0,sleep=off"]
    argv = vm.build_argv(req, kvm=False)
    assert argv[-2:] == ["--qemu-opts", "-icount shift=0,sleep=off"]


def test_icount_is_tcg_with_its_options_last(tmp_path: Path) -> None:
    req = vm.VmRequest(
        bzimage=tmp_path / "bzImage",
        command=["true"],
        outdir=tmp_path,
        qemu_opts=["-no-hpet"],
        icount=True,
    )
    argv = vm.build_argv(req, kvm=True)  # KVM would refuse -icount
    assert "--disable-kvm" in argv
    assert argv[argv.index("--cpus") + 1] == "1"
    assert argv[-2:] == ["--qemu-opts", "-no-hpet " + " ".join(vm.ICOUNT_QEMU_OPTS)]


def test_guest_imports_pyksm_from_this_checkout(tmp_path: Path) -> None:
    """The guest gets PYTHONPATH=<this checkout> (a worktree's tests must not run
    the code the venv's editable install points at); the request may override it."""
    req = vm.VmRequest(bzimage=tmp_path / "bzImage", command=["true"], outdir=tmp_path)
    script = vm.build_argv(req, kvm=False)
    assert f" PYTHONPATH={repo_root()} && " in script[script.index("--exec") + 1]
    req.env["PYTHONPATH"] = "/elsewhere"
    script = vm.build_argv(req, kvm=False)
    assert " PYTHONPATH=/elsewhere && " in script[script.index("--exec") + 1]


def test_under_tcg_numpy_keeps_off_the_masked_loads_tcg_faults_on(tmp_path: Path) -> None:
    req = vm.VmRequest(bzimage=tmp_path / "bzImage", command=["true"], outdir=tmp_path)
    tcg = vm.build_argv(req, kvm=False)
    script = tcg[tcg.index("--exec") + 1]
    assert "NPY_DISABLE_CPU_FEATURES='AVX2 FMA3 " in script and "X86_V3 X86_V4'" in script
    kvm = vm.build_argv(req, kvm=True)
    assert "NPY_DISABLE_CPU_FEATURES" not in kvm[kvm.index("--exec") + 1]
    req.icount = True  # icount is TCG, whatever KVM could do
    icount = vm.build_argv(req, kvm=True)
    assert "NPY_DISABLE_CPU_FEATURES" in icount[icount.index("--exec") + 1]

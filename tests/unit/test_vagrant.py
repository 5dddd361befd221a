"""The Vagrant lab's pure logic: settings, error messages, kernel lookup, commands."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pyksm import cli
from pyksm.errors import PyksmError
from pyksm.lab import build as kbuild
from pyksm.lab import vagrant as vg

REPO = Path(__file__).resolve().parents[2]


# --- settings --------------------------------------------------------------------------


def test_defaults() -> None:
    s = vg.parse_settings({})
    assert s == vg.Settings()
    assert (s.kernel, s.memory_mib, s.cpus, s.accel, s.box) == (
        "test",
        4096,
        2,
        "auto",
        "pyksm/debian12",
    )


def test_every_setting() -> None:
    s = vg.parse_settings(
        {
            "PYKSM_VAGRANT_KERNEL": "vanilla",
            "PYKSM_VAGRANT_MEMORY": "6G",
            "PYKSM_VAGRANT_CPUS": "4",
            "PYKSM_VAGRANT_ACCEL": "TCG",
            "PYKSM_VAGRANT_CMDLINE": " ksm.x=1 ",
            "PYKSM_VAGRANT_BOX": "me/box",
            "PATH": "/bin",
        }
    )
    assert s == vg.Settings("vanilla", 6144, 4, "tcg", "ksm.x=1", "me/box")


@pytest.mark.parametrize(
    ("text", "mib"), [("4096", 4096), ("4096M", 4096), ("2G", 2048), ("3GiB", 3072), ("1g", 1024)]
)
def test_memory_sizes(text: str, mib: int) -> None:
    assert vg.parse_memory(text) == mib


@pytest.mark.parametrize("text", ["", "lots", "4T", "0", "-1G", "100"])
def test_bad_memory_names_the_variable(text: str) -> None:
    with pytest.raises(PyksmError, match="PYKSM_VAGRANT_MEMORY") as e:
        vg.parse_memory(text)
    assert e.value.hint and "PYKSM_VAGRANT_MEMORY=" in e.value.hint


@pytest.mark.parametrize(
    ("var", "value", "match"),
    [
        ("PYKSM_VAGRANT_CPUS", "two", "PYKSM_VAGRANT_CPUS='two'"),
        ("PYKSM_VAGRANT_CPUS", "0", "1 to 64"),
        ("PYKSM_VAGRANT_ACCEL", "hvf", "auto, kvm or tcg"),
        ("PYKSM_VAGRANT_KERNEL", "fast", "not a kernel variant"),
        ("PYKSM_VAGRANT_MEMROY", "4G", "unknown setting PYKSM_VAGRANT_MEMROY"),
    ],
)
def test_bad_settings(var: str, value: str, match: str) -> None:
    with pytest.raises(PyksmError, match=match) as e:
        vg.parse_settings({var: value})
    assert e.value.hint


def test_vagrantfile_documents_every_setting() -> None:
    text = (REPO / "Vagrantfile").read_text()
    for var in vg.ENV_DOC:
        assert var in text, var
    assert "qemu:///system" in text and vg.NETNS in text
    assert 'management_network_mode = "none"' in text


# --- kernel and accelerator ------------------------------------------------------------


def fake_build(tmp_path: Path, release: str = "6.12.117-pyksm") -> kbuild.KernelBuild:
    path = tmp_path / "build"
    path.mkdir(exist_ok=True)
    (path / "bzImage").write_bytes(b"MZ fake kernel")
    return kbuild.KernelBuild(
        key="k", name="patched-test", path=path, version="6.12.117", variant="test",
        flavor="patched", release=release,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kernel", "fix"),
    [
        ("test", "pyksm kernel build"),
        ("debug", "pyksm kernel build --debug"),
        ("vanilla", "pyksm kernel build --vanilla"),
        ("vanilla-debug", "pyksm kernel build --debug --vanilla"),
    ],
)
def test_kernel_not_built_names_the_build_command(kernel: str, fix: str) -> None:
    with pytest.raises(PyksmError, match=f"the {kernel} kernel has not been built") as e:
        vg.find_kernel(vg.Settings(kernel=kernel), lambda req: None)
    assert e.value.hint == fix


def test_kernel_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(PyksmError, match="is not a file"):
        vg.find_kernel(vg.Settings(kernel=str(tmp_path / "nope")), lambda req: None)


def test_variant_picks_the_matching_build_request(tmp_path: Path) -> None:
    seen: list[kbuild.BuildRequest] = []

    def cached(req: kbuild.BuildRequest) -> kbuild.KernelBuild:
        seen.append(req)
        return fake_build(tmp_path)

    vg.find_kernel(vg.Settings(kernel="vanilla-debug"), cached)
    assert seen[0].vanilla and seen[0].variant == "debug"


@pytest.mark.parametrize(
    ("accel", "driver", "cpu_mode"), [("tcg", "qemu", "custom"), ("kvm", "kvm", "host-passthrough")]
)
def test_resolve(tmp_path: Path, accel: str, driver: str, cpu_mode: str) -> None:
    build = fake_build(tmp_path)
    boot = tmp_path / "boot"
    r = vg.resolve(vg.Settings(accel=accel, cmdline="quiet"), lambda req: build, boot_dir=boot)
    assert (r.driver, r.cpu_mode, r.release) == (driver, cpu_mode, "6.12.117-pyksm")
    assert Path(r.kernel).parent == boot
    assert Path(r.kernel).read_bytes() == b"MZ fake kernel"
    assert r.cmdline.startswith("root=/dev/vda rw") and r.cmdline.endswith(" quiet")
    assert r.proxy_command == "ip netns exec pyksm-vagrant nc %h %p"
    # the copy is reused, not rewritten
    assert vg.resolve(vg.Settings(accel=accel), lambda req: build, boot_dir=boot).kernel == r.kernel


# --- host tools and libvirtd -----------------------------------------------------------


def run_returning(stdout: str) -> vg.Run:
    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), 0, stdout, "")

    return run


@pytest.mark.parametrize(
    ("missing", "match"),
    [
        ("vagrant", "vagrant is not installed"),
        ("libvirtd", "libvirtd is not installed"),
        ("virsh", "virsh is not installed"),
        ("nc", "nc is not installed"),
    ],
)
def test_missing_tool(missing: str, match: str) -> None:
    def which(name: str) -> str | None:
        return None if name == missing else f"/usr/bin/{name}"

    with pytest.raises(PyksmError, match=match) as e:
        vg.check_tools(which, run_returning("vagrant-libvirt (0.11.2, system)\n"))
    assert e.value.hint == "make vagrant-setup"


def test_missing_plugin() -> None:
    with pytest.raises(PyksmError, match="vagrant-libvirt plugin is not installed") as e:
        vg.check_tools(lambda n: "/usr/bin/" + n, run_returning("No plugins installed.\n"))
    assert e.value.hint == "make vagrant-setup"


def test_all_tools_present() -> None:
    vg.check_tools(lambda n: "/usr/bin/" + n, run_returning("vagrant-libvirt (0.11.2, system)\n"))


def test_libvirtd_not_running(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vg, "libvirtd_state", lambda: vg.LibvirtdState(False))
    with pytest.raises(PyksmError, match="libvirtd is not running") as e:
        vg.require_libvirtd()
    assert e.value.hint and "pyksm vagrant up" in e.value.hint


def test_libvirtd_in_root_namespace_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vg, "libvirtd_state", lambda: vg.LibvirtdState(True, 4242, False))
    with pytest.raises(PyksmError, match="ROOT network namespace") as e:
        vg.require_libvirtd()
    assert e.value.hint and "kill 4242" in e.value.hint


def test_libvirtd_state_reads_the_pidfile(tmp_path: Path) -> None:
    assert not vg.libvirtd_state(tmp_path / "none.pid").running
    pidfile = tmp_path / "libvirtd.pid"
    pidfile.write_text(f"{__import__('os').getpid()}\n")
    state = vg.libvirtd_state(pidfile, netns="pyksm-test-no-such-netns")
    assert state.running and not state.in_netns


def test_box_added() -> None:
    listing = "pyksm/debian12 (libvirt, 0)\ngeneric/debian12 (libvirt, 4.3.12)\n"
    assert vg.box_added("pyksm/debian12", run_returning(listing))
    assert not vg.box_added("pyksm/debian1", run_returning(listing))
    assert not vg.box_added("pyksm/debian12", run_returning("There are no installed boxes!\n"))


def test_guest_command_quotes_and_exports_results() -> None:
    line = vg.guest_command(["sh", "-c", "echo $PYKSM_RESULTS; ls 'a b'"], "/home/vagrant/r 1")
    assert line.startswith("mkdir -p '/home/vagrant/r 1' && cd /vagrant && sudo env ")
    assert "PYKSM_RESULTS='/home/vagrant/r 1' PYKSM_BACKEND=vagrant sh -c " in line
    assert "'echo $PYKSM_RESULTS; ls '\"'\"'a b'\"'\"''" in line


# --- command line ----------------------------------------------------------------------


def test_cli_ssh_without_libvirtd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(vg, "libvirtd_state", lambda: vg.LibvirtdState(False))
    assert cli.main(["vagrant", "ssh", "--", "true"]) == 2
    text = capsys.readouterr().err
    assert "libvirtd is not running" in text and "fix: pyksm vagrant up" in text


def test_cli_run_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["vagrant", "run", "--"]) == 2
    assert "no command given" in capsys.readouterr().err


def test_cli_up_without_vagrant(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = vg.check_tools
    monkeypatch.setattr(vg, "check_tools", lambda **kw: real(lambda name: None, **kw))
    assert cli.main(["vagrant", "up"]) == 2
    text = capsys.readouterr().err
    assert "vagrant is not installed" in text and "fix: make vagrant-setup" in text


def test_bzimage_release(tmp_path: Path) -> None:
    image = bytearray(0x1000)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x300).to_bytes(2, "little")
    version = b"6.12.117-pyksm (root@host) #1 SMP\0"
    image[0x500 : 0x500 + len(version)] = version
    path = tmp_path / "bzImage"
    path.write_bytes(bytes(image))
    assert vg.bzimage_release(path) == "6.12.117-pyksm"
    assert vg.find_kernel(vg.Settings(kernel=str(path)), lambda req: None) == (
        path,
        "6.12.117-pyksm",
    )
    (tmp_path / "junk").write_bytes(b"not a kernel")
    assert vg.bzimage_release(tmp_path / "junk") == ""


def test_box_volumes_picks_only_uploads_of_that_box() -> None:
    names = [
        "pyksm-VAGRANTSLASH-debian12_vagrant_box_image_0_1795761562_box.img",
        "pyksm-VAGRANTSLASH-debian12_vagrant_box_image_0_box.img",
        "pyksm-VAGRANTSLASH-debian13_vagrant_box_image_0_1_box.img",
        "pyksm_default.img",
    ]
    assert vg.box_volumes("pyksm/debian12", names) == names[:2]

"""The real-QEMU guest's host side without QEMU: the agent's reply lines,
the workloads' commands, the drive options and QEMU's command line, and a
fake QEMU (a shell script speaking the agent's protocol) for the driver."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment import qemu_guest as qg
from pyksm.lab import guest_image
from tests.unit.test_runner_results import children, open_fds


def test_replies_parse_into_their_types() -> None:
    assert qg.parse_reply("@pyksm READY agent=1 uptime_ms=812 disk=ro kernel=6.12.117-x") == (
        qg.Ready(agent=1, uptime_ms=812, disk="ro", kernel="6.12.117-x")
    )
    assert qg.parse_reply("@pyksm PROGRESS cmd=tar elapsed_ms=1050 read_bytes=8826880\r") == (
        qg.Progress(cmd="tar", elapsed_ms=1050, read_bytes=8826880)
    )
    done = qg.parse_reply("@pyksm DONE cmd=tar status=0 elapsed_ms=10 read_bytes=5 files=2")
    assert done == qg.Done(cmd="tar", status=0, elapsed_ms=10, read_bytes=5, files=2)
    assert qg.parse_reply("@pyksm ERROR cmd=tar no such path on the disk: x") == (
        qg.AgentError(cmd="tar", text="no such path on the disk: x")
    )
    assert qg.parse_reply("@pyksm BYE") == qg.Bye()


def test_console_noise_is_not_a_reply_but_a_reply_after_noise_is() -> None:
    assert qg.parse_reply("[    1.234] virtio_blk virtio0: [vda] 524288 512-byte blocks") is None
    assert qg.parse_reply("") is None
    # a kernel message that ran into the reply's line
    assert qg.parse_reply("[ 2.0] ext4: mounted@pyksm BYE") == qg.Bye()


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("@pyksm ", "empty reply"),
        ("@pyksm HELLO x=1", "unknown reply 'HELLO'"),
        ("@pyksm DONE cmd=tar status=0 elapsed_ms=1 read_bytes=2", "without files"),
        ("@pyksm DONE cmd=tar status=x elapsed_ms=1 read_bytes=2 files=0", "status='x'"),
        ("@pyksm PROGRESS cmd=tar 17", "bad field '17'"),
    ],
)
def test_malformed_replies_are_one_line_errors(line: str, match: str) -> None:
    with pytest.raises(PyksmError, match=match):
        qg.parse_reply(line)


def test_workload_commands() -> None:
    assert qg.Tar("include").command() == "tar include"
    assert qg.Tar("/linux/kernel/").command() == "tar linux/kernel"
    assert qg.Tar().command() == "tar ."
    assert qg.Cat("mm").command() == "cat mm"
    assert qg.RandomRead("fs", seed=7, count=100, rate=50).command() == "random fs 7 100 50"
    assert qg.DiskRead().command() == "dd"
    assert qg.DropCaches().command() == "drop"
    assert qg.workload_from("random", "net", 3, 4, 5) == qg.RandomRead("net", 3, 4, 5)


@pytest.mark.parametrize("path", ["", "a b", "../etc", "x/../../y", "a\nb"])
def test_paths_that_leave_the_disk_or_split_the_line_are_refused(path: str) -> None:
    with pytest.raises(PyksmError, match="disk path"):
        qg.Tar(path).command()


def test_bad_random_numbers_and_workload_names() -> None:
    with pytest.raises(PyksmError, match="rate must be >= 0"):
        qg.RandomRead(rate=-1).command()
    with pytest.raises(PyksmError, match="unknown workload 'grep'"):
        qg.workload_from("grep")


@pytest.mark.parametrize(
    ("aio", "cache", "expect"),
    [
        ("threads", "writeback", "aio=threads,cache=writeback"),
        ("threads", "none", "aio=threads,cache=none"),
        ("native", "none", "aio=native,cache=none"),
        ("io_uring", "writeback", "aio=io_uring,cache=writeback"),
        ("io_uring", "none", "aio=io_uring,cache=none"),
    ],
)
def test_drive_modes(aio: str, cache: str, expect: str) -> None:
    arg = qg.DriveOptions(aio=aio, cache=cache, readonly=True).drive_arg(Path("/d/disk.ext4"))
    assert arg == f"file=/d/disk.ext4,format=raw,if=virtio,{expect},readonly=on"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"aio": "native", "cache": "writeback"}, "aio=native needs cache=none"),
        ({"aio": "posix"}, "aio='posix': choose from threads, native, io_uring"),
        ({"cache": "unsafe"}, "cache='unsafe'"),
        ({"format": "vmdk"}, "disk format"),
    ],
)
def test_drive_options_refuse_what_qemu_would(kw: dict[str, str], match: str) -> None:
    with pytest.raises(PyksmError, match=match):
        qg.DriveOptions(**kw)  # type: ignore[arg-type]


def test_qemu_argv() -> None:
    argv = qg.qemu_argv(
        Path("/k/bzImage"),
        Path("/k/initrd"),
        Path("/d/disk.ext4"),
        memory_mib=128,
        drive=qg.DriveOptions(aio="native", cache="none"),
        qmp=Path("/t/qmp.sock"),
        nice=10,
    )
    assert argv[:4] == ["nice", "-n", "10", "qemu-system-x86_64"]
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-m") + 1] == "128"
    assert argv[argv.index("-nic") + 1] == "none"  # no network, ever
    assert argv[argv.index("-serial") + 1] == "stdio"
    assert argv[argv.index("-kernel") + 1] == "/k/bzImage"
    assert argv[argv.index("-initrd") + 1] == "/k/initrd"
    assert "aio=native,cache=none" in argv[argv.index("-drive") + 1]
    assert argv[argv.index("-qmp") + 1] == "unix:/t/qmp.sock,server=on,wait=off"
    assert "nice" not in qg.qemu_argv(Path("k"), Path("i"), Path("d"))
    with pytest.raises(PyksmError, match="comma"):
        qg.qemu_argv(Path("k"), Path("i"), Path("/a,b/disk"))
    with pytest.raises(PyksmError, match="at least 32 MiB"):
        qg.qemu_argv(Path("k"), Path("i"), Path("d"), memory_mib=16)


def test_result_throughput() -> None:
    done = qg.Done(cmd="tar", status=0, elapsed_ms=1, read_bytes=64 << 20, files=9)
    assert qg.WorkloadResult("tar .", done, 4.0).mib_per_s == 16.0
    assert qg.WorkloadResult("tar .", done, 4.0).ok


FAKE_AGENT = r"""#!/bin/sh
echo "SeaBIOS (version 1.16)"
echo "[    0.100000] Linux version 6.12.117-pyksm-guest"
echo "@pyksm READY agent=1 uptime_ms=900 disk=ro kernel=6.12.117-pyksm-guest"
while read -r cmd arg; do
  case "$cmd" in
  tar) echo "@pyksm PROGRESS cmd=tar elapsed_ms=1000 read_bytes=4096"
       echo "[    2.000000] some kernel message"
       echo "@pyksm PROGRESS cmd=tar elapsed_ms=2000 read_bytes=8192"
       echo "@pyksm DONE cmd=tar status=0 elapsed_ms=2500 read_bytes=12288 files=3" ;;
  cat) echo "@pyksm DONE cmd=cat status=1 elapsed_ms=5 read_bytes=0 files=0" ;;
  progress) echo "@pyksm DONE cmd=progress status=0 elapsed_ms=0 read_bytes=0 files=0" ;;
  hang) exec sleep 60 ;;
  random) while :; do
            echo "@pyksm PROGRESS cmd=random elapsed_ms=1500 read_bytes=3145728"; sleep 0.1
          done ;;
  off) echo "@pyksm BYE"; exit 0 ;;
  *) echo "@pyksm ERROR cmd=$cmd unknown command" ;;
  esac
done
"""


@pytest.fixture
def fake_qemu(tmp_path: Path) -> str:
    qemu = tmp_path / "qemu"
    qemu.write_text(FAKE_AGENT)
    qemu.chmod(0o755)
    return str(qemu)


def _guest(tmp_path: Path, qemu: str) -> qg.Guest:
    return qg.Guest(
        tmp_path / "bzImage", tmp_path / "disk", qemu=qemu, initrd=tmp_path / "initrd",
        boot_timeout=10,
    )  # fmt: skip


def test_the_driver_collects_progress_until_done(tmp_path: Path, fake_qemu: str) -> None:
    before, fds = children(), open_fds()
    seen: list[qg.Progress] = []
    with _guest(tmp_path, fake_qemu) as guest:
        assert guest.ready == qg.Ready(1, 900, "ro", "6.12.117-pyksm-guest")
        assert guest.boot_seconds > 0
        guest.progress_every(1)
        r = guest.run(qg.Tar("include"), timeout=10, on_progress=seen.append)
        assert r.ok and r.done.read_bytes == 12288 and r.done.files == 3
        assert [p.read_bytes for p in r.progress] == [4096, 8192] == [p.read_bytes for p in seen]
        assert not guest.run(qg.Cat("mm"), timeout=10).ok  # a failed workload is a result
        with pytest.raises(PyksmError, match="unknown command"):
            guest.run(qg.DropCaches(), timeout=10)
    assert guest.proc.returncode == 0  # powered off by "off", not killed
    assert children() == before
    assert open_fds() == fds


def test_a_guest_that_hangs_in_a_workload_times_out_and_leaves_nothing(
    tmp_path: Path, fake_qemu: str
) -> None:
    before, fds = children(), open_fds()
    guest = _guest(tmp_path, fake_qemu)
    try:
        with pytest.raises(PyksmError, match="no b'DONE'"):
            guest.command("hang", timeout=0.5)
    finally:
        guest.close(timeout=0.5)  # it reads no "off" any more: killed
    assert guest.proc.returncode == -9
    assert children() == before
    assert open_fds() == fds


def test_a_slow_workload_times_out_with_how_far_it_got(tmp_path: Path, fake_qemu: str) -> None:
    guest = _guest(tmp_path, fake_qemu)
    try:
        with pytest.raises(PyksmError, match=r"no DONE within 0.5 s \(still running, last "
                           r"PROGRESS at 1.5 s: 3.0 MiB read\)$"):  # fmt: skip
            guest.run(qg.RandomRead("kernel", 1, 10, 2), timeout=0.5)
    finally:
        guest.close(timeout=0.5)


PANICKING_GUEST = r"""#!/bin/sh
echo "[    0.100000] Linux version 6.12.117-pyksm-guest"
echo "BUG: kernel NULL pointer dereference, address: 0000000000000012"
printf "Kernel panic - not syncing: Fatal exception in interrupt"
exit 0
"""


def test_a_guest_that_panics_at_boot_says_so_and_keeps_its_whole_console(
    tmp_path: Path,
) -> None:
    qemu = tmp_path / "qemu"
    qemu.write_text(PANICKING_GUEST)
    qemu.chmod(0o755)
    log = tmp_path / "guest.console.log"
    before, fds = children(), open_fds()
    with pytest.raises(PyksmError, match=r"exited before READY; output tail: .*Kernel panic"):
        qg.Guest(
            tmp_path / "bzImage", tmp_path / "disk", qemu=str(qemu),
            initrd=tmp_path / "initrd", boot_timeout=10, console_log=log,
        )  # fmt: skip
    text = log.read_text()
    # every line, and the last one that had no newline
    assert "Linux version" in text and "NULL pointer" in text
    assert text.endswith("Fatal exception in interrupt")
    assert children() == before
    assert open_fds() == fds


def test_an_unwritable_console_log_is_one_error_and_starts_nothing(tmp_path: Path) -> None:
    before = children()
    with pytest.raises(PyksmError, match="guest console log"):
        qg.Guest(
            tmp_path / "bzImage", tmp_path / "disk", qemu="/bin/true",
            console_log=tmp_path / "no" / "such" / "dir" / "log",
        )  # fmt: skip
    assert children() == before


def test_the_agent_script_is_valid_busybox_sh() -> None:
    agent = guest_image.agent_path()
    text = agent.read_text()
    assert text.startswith("#!/bin/busybox sh\n")
    # every command the host sends is documented in the agent's header
    sent = [w.command() for w in (qg.Tar(), qg.Cat(), qg.RandomRead(), qg.DiskRead())]
    for cmd in [c.split()[0] for c in sent] + ["drop", "progress", "off"]:
        assert f"\n#   {cmd} " in text, cmd
    try:
        done = subprocess.run(["busybox", "sh", "-n", str(agent)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no busybox here")
    assert done.returncode == 0, done.stderr

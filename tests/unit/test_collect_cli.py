"""`pyksm collect` and `pyksm hint --replay` argument handling: one-line errors, exit 2."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyksm.cli import main, parser
from pyksm.collect import cli as collect_cli
from pyksm.control.controller import Controller
from pyksm.control.trust import TrustPolicy
from pyksm.errors import PyksmError
from pyksm.events import ReadEvent
from pyksm.kernel.ksm import SYSFS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["collect"], "no targets"),
        (["collect", "-p", "999999999", "--record", "x"], "no process 999999999"),
        (["collect", "--safe", "-p", "1", "--record", "x"], "--safe needs at least one --allow"),
        (["collect", "--allow", "1", "-p", "1", "--record", "x"], "only apply with --safe"),
        (["hint"], "needs PID START LEN"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # and back: later collectors (python -m pyksm) import from it
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_trust_group_syntax_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["collect", "--safe", "--trust-group", "nopids", "-p", "1"])
    assert "NAME=PID" in capsys.readouterr().err


@pytest.mark.skipif((SYSFS / "hint_capacity").exists(), reason="this kernel has KSM++ hints")
def test_live_mode_refuses_without_the_ksmpp_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "-p", str(os.getpid())]) == 2
    err = capsys.readouterr().err
    assert "live mode needs the KSM++ kernel" in err
    assert "--record" in err


def _safe_policy(*allow: str) -> TrustPolicy:
    args = parser().parse_args(
        ["collect", "--record", "x", "--safe", *(a for name in allow for a in ("--allow", name))]
    )
    policy = collect_cli._policy(args)
    assert isinstance(policy, TrustPolicy)
    return policy


def test_safe_allow_comm_admits_a_real_process_by_its_command_name() -> None:
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            assert _safe_policy("sleep").allowed(child.pid)
            assert not _safe_policy("cat").allowed(child.pid)
            assert _safe_policy("cat", str(child.pid)).allowed(child.pid)
            # The controller hints its reads, and refuses them for another allowlist.
            read = ReadEvent(0, child.pid, 2, 0x10000, 2 * 4096)
            assert Controller(policy=_safe_policy("sleep")).process([read], 0) != []
            refusing = Controller(policy=_safe_policy("cat"))
            assert refusing.process([read], 0) == []
            assert refusing.stats.refused_events == 1
        finally:
            child.kill()


def test_safe_allow_comm_rereads_the_name_after_exec() -> None:
    names = {7: "bash"}
    policy = TrustPolicy(safe=True, allow_comms=frozenset({"qemu-system-x86"}), comm_of=names.get)
    assert not policy.allowed(7)
    names[7] = "qemu-system-x86"
    policy.learn(7)
    assert policy.allowed(7)
    policy.forget(7)
    assert not policy.allowed(8)  # no such process: no name, not allowed


def test_a_collector_that_fails_to_attach_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trace file, its fd and the signal handlers: all back as they were."""
    import signal

    from pyksm.collect import session
    from pyksm.collect.targets import TargetSpec

    def no_probes(*_a: object) -> None:
        raise PyksmError("bcc could not load read_trace.c (syscalls): provoked")

    monkeypatch.setattr(session, "ReadProbes", no_probes)
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    fds = set(os.listdir("/proc/self/fd"))
    trace = tmp_path / "t.trace"
    opts = session.CollectOptions(targets=TargetSpec(pids=(os.getpid(),)), record=trace)
    with pytest.raises(PyksmError, match="provoked"):
        session.run(opts, lambda _s: None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    assert set(os.listdir("/proc/self/fd")) == fds
    assert not trace.exists()


def test_collect_shows_the_rate_cap_and_the_adaptive_interleave(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the run's statistics say about both, on the summary lines."""
    from dataclasses import replace

    from pyksm.collect import session
    from tests.unit.test_collect_stats import example

    seen = []

    def fake_run(opts: session.CollectOptions, *_a: object, **_k: object) -> object:
        seen.append(opts)
        return replace(
            example(),
            mode="live",
            record=None,
            rate_dropped_pages=96,
            rate_dropped={"overflow": 20, "age": 4},
            interleave_base="1:1",
            interleave_now="1:1",
            interleave_changes=3,
            interleave_ticks={"1:1": 5, "16:1": 2},
        )

    monkeypatch.setattr(session, "run", fake_run)
    argv = ["collect", "-p", str(os.getpid()), "--adaptive-interleave"]
    assert main([*argv, "--interleave-ladder", "1:1,4:1"]) == 0
    err = capsys.readouterr().err
    assert "rate cap dropped 96 pages (4 age, 20 overflow hint records)" in err
    assert "adaptive hint_interleave: 3 changes, ticks per ratio: 1:1 5, 16:1 2; back to 1:1" in err
    assert seen[0].adaptive_interleave and seen[0].interleave_ladder == ((1, 1), (4, 1))
    assert main(argv[:3]) == 0
    assert not seen[1].adaptive_interleave

"""`pyksm collect` and `pyksm hint --replay` argument handling: one-line errors, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyksm.cli import main
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
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    os.chdir(tmp_path)
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

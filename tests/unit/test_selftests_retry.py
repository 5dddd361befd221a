"""An upstream selftest with a known race runs again once; nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyksm.lab import selftests


@pytest.mark.parametrize(
    ("codes", "status", "runs", "kept"),
    [
        ([1, 0], "pass", 2, True),  # the race: the second run decides
        ([1, 1], "fail", 2, True),  # failing twice fails
        ([0], "pass", 1, False),
    ],
)
def test_unmerge_runs_again_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    codes: list[int],
    status: str,
    runs: int,
    kept: bool,
) -> None:
    (tmp_path / "ksm_tests").touch()
    left = list(codes)
    calls: list[str] = []

    def run(name: str, argv: list[str], limit: float) -> selftests.CaseResult:
        calls.append(name)
        code = left.pop(0) if name == "unmerge -U" else 1
        return selftests.CaseResult(name, argv, code, 0.1, f"run {len(calls)}")

    monkeypatch.setattr(selftests, "_run_case", run)
    got = selftests.run_in_guest(tmp_path, tmp_path / "out.json", only=["unmerge -U", "merge -M"])
    by_name = {r.name: r for r in got}
    assert by_name["unmerge -U"].status == status
    assert calls.count("unmerge -U") == runs
    assert (by_name["unmerge -U"].first_failure is not None) == kept
    # a case without a known race fails on its first run
    assert calls.count("merge -M") == 1 and by_name["merge -M"].first_failure is None
    assert selftests.load(tmp_path / "out.json") == got

"""Experiment modes and scan rates as the user spells them."""

from __future__ import annotations

import pytest

from pyksm.errors import PyksmError
from pyksm.experiment.runner import MODES, collector_args, mode_config, parse_scan_rate


def test_every_named_mode_parses_to_its_settings() -> None:
    got = {m: mode_config(m) for m in MODES}
    assert [m for m, c in got.items() if c.hints] == [
        "ksm++",
        "ksm++-nosmart",
        "ksm++-advisor",
        "ksm++-adaptive",
        "ksm++-advisor-adaptive",
    ]
    assert [m for m, c in got.items() if c.adaptive] == ["ksm++-adaptive", "ksm++-advisor-adaptive"]
    assert [m for m, c in got.items() if not c.smart_scan] == ["ksm-nosmart", "ksm++-nosmart"]
    assert [m for m, c in got.items() if c.advisor] == [
        "ksm-advisor",
        "ksm++-advisor",
        "ksm++-advisor-adaptive",
    ]
    assert all(c.scan_rate is None for c in got.values())
    assert all(c.interleave == (1, 1) for c in got.values())


def test_a_ksm_plus_plus_mode_may_carry_a_fixed_interleave() -> None:
    c = mode_config("ksm++=4:1")
    assert (c.name, c.hints, c.adaptive, c.interleave, c.scan_rate) == (
        "ksm++=4:1", True, False, (4, 1), None
    )  # fmt: skip
    c = mode_config("ksm++-nosmart=16:1@100:10")
    assert (c.smart_scan, c.interleave, c.scan_rate) == (False, (16, 1), (100, 10))


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("ksm=4:1", "only a ksm\\+\\+ mode that is not adaptive"),
        ("ksm++-adaptive=4:1", "only a ksm\\+\\+ mode that is not adaptive"),
        ("ksm++-advisor-adaptive=4:1", "only a ksm\\+\\+ mode that is not adaptive"),
        ("ksm++=4:0", "L must be at least 1"),
        ("ksm++=17:1", "H at most 16 x L"),
        ("ksm++=4", "is not H:L"),
        ("ksm++=", "is not H:L"),
        ("kms=1:1", "unknown mode 'kms'"),
    ],
)
def test_bad_fixed_interleaves_are_refused(mode: str, message: str) -> None:
    with pytest.raises(PyksmError, match=message):
        mode_config(mode)


def test_the_adaptive_mode_asks_the_collector_for_it() -> None:
    c = mode_config("ksm++-adaptive@100:20")
    assert (c.hints, c.smart_scan, c.advisor, c.adaptive) == (True, True, False, True)
    assert collector_args([7, 8], c.adaptive) == ["-p", "7", "-p", "8", "--adaptive-interleave"]
    assert collector_args([7]) == ["-p", "7"]


def test_a_mode_may_carry_its_own_scan_rate() -> None:
    c = mode_config("ksm@175:20")
    assert (c.name, c.hints, c.scan_rate) == ("ksm@175:20", False, (175, 20))
    assert mode_config("ksm++-nosmart@100:10").scan_rate == (100, 10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100", "not PAGES:MILLISECONDS"),
        ("a:20", "not PAGES:MILLISECONDS"),
        ("0:20", "PAGES must be >= 1"),
        ("100:-1", "MILLISECONDS >= 0"),
    ],
)
def test_bad_scan_rates_are_refused(text: str, message: str) -> None:
    with pytest.raises(PyksmError, match=message):
        parse_scan_rate(text)
    with pytest.raises(PyksmError, match=message):
        mode_config(f"ksm@{text}")


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(PyksmError, match=r"unknown mode 'kms'.*ksm\+\+-advisor"):
        mode_config("kms")
    assert parse_scan_rate("100:20") == (100, 20)

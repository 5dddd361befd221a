"""pyksm.probes.ksmd_visits: decoding bpf/ksmd_visits.c's map, the JSON form,
the report's table; the C program and the Python agree on every number."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pyksm.errors import PyksmError
from pyksm.probes import ksmd_visits
from pyksm.probes.ksmd_visits import KindCost, decode, kind_costs_from_json

REPO = Path(__file__).resolve().parents[2]


def test_rows_become_kinds_with_their_searches() -> None:
    ms = 1_000_000
    rows = [
        (0, 6, 10, 3000 * ms),  # hinted, unstable: 10 visits, 3 s
        (0, 4, 5, 1500 * ms),  # hinted, merged with an unstable-tree partner
        (0, 16, 10, 1000 * ms),  # their hint-tree searches
        (0, 17, 10, 900 * ms),  # their unstable-tree searches
        (0, 18, 10, 50 * ms),  # their rmap_item lookups
        (1, 6, 4, 800 * ms),  # linear visits of hinted pages
        (1, 2, 1, 200 * ms),  # ... one of them merged with the zero page
        (2, 6, 100, 9000 * ms),  # linear visits that compared ...
        (2, 3, 1, 100 * ms),  # ... one of them merged with a KSM page
        (2, 17, 100, 7000 * ms),
        (2, 1, 50, 350 * ms),  # checksum changed
        (1, 1, 2, 20 * ms),  # a hinted page rewritten since: checksum changed too
        (0, 1, 3, 30 * ms),  # a hinted visit without skip-volatility stays hinted
        (7, 6, 1, 1),  # no such class: ignored
    ]
    got = decode(rows)
    assert list(got) == list(ksmd_visits.KINDS)
    h = got["hinted"]
    assert (h.visits, h.hint_walks, h.unstable_walks, h.merges) == (18, 10, 10, 5)
    assert h.visit_s == pytest.approx(4.53) and h.lookup_s == pytest.approx(0.05)
    assert h.us_per_visit(h.hint_walk_s) == pytest.approx(1e6 / 18)
    again = got["linear, hinted this round"]
    assert (again.visits, again.merges) == (5, 1)
    lin = got["linear"]
    assert (lin.visits, lin.hint_walks, lin.merges) == (101, 0, 1)
    assert lin.visit_s == pytest.approx(9.1)
    changed = got["linear, checksum changed"]
    assert changed.visits == 52 and changed.visit_s == pytest.approx(0.37)
    assert changed.merges == 0
    assert KindCost().us_per_visit(1.0) is None


def test_json_round_trip_and_bad_input() -> None:
    costs = decode([(0, 6, 2, 10**9), (0, 4, 1, 10**9), (0, 16, 2, 10**8)])
    doc = {k: c.to_json() for k, c in costs.items()}
    assert kind_costs_from_json(doc, "x") == costs


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"sideways": {}},
        {"hinted": []},
        {"hinted": {"visits": -1}},
        {"hinted": {"visits": "3"}},
        {"hinted": {"visits": True}},
        {"hinted": {"speed": 1}},
    ],
)
def test_a_bad_ksmd_visits_entry_is_named(bad: object) -> None:
    with pytest.raises(PyksmError, match="ksmd_visits"):
        kind_costs_from_json(bad, "summary.json")


def _c_defines() -> dict[str, int]:
    text = (REPO / "bpf" / "ksmd_visits.c").read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(r"#define (\w+) (0x[0-9a-f]+|\d+)", text)}


def test_the_program_and_the_decoder_agree() -> None:
    c = _c_defines()
    assert (c["PART_HINT_WALK"], c["PART_UNSTABLE_WALK"], c["PART_LOOKUP"]) == (
        ksmd_visits._HINT_WALK,
        ksmd_visits._UNSTABLE_WALK,
        ksmd_visits._LOOKUP,
    )
    text = (REPO / "bpf" / "ksmd_visits.c").read_text()
    # the class comments (0 hinted, 1 linear of a hinted page, 2 linear) in the decoder's order
    assert re.search(r"0\s+hinted", text) and re.search(r"2\s+linear, any other", text)
    assert ksmd_visits._CLASS_KINDS == ("hinted", "linear, hinted this round", "linear")


def test_the_program_reads_the_series_flags() -> None:
    """The flag values bpf/ksmd_visits.c tests are the ones the kernel series defines."""
    c = _c_defines()
    series = "".join(p.read_text() for p in sorted((REPO / "kernel-patches").glob("0*.patch")))
    for name in ("KSM_CMP_HINT", "UNSTABLE_FLAG", "HINT_TREE_FLAG"):
        m = re.search(rf"^[+ ]#define {name}\s+(0x[0-9a-f]+)", series, re.MULTILINE)
        assert m, name
        assert int(m[1], 16) == c[name], name
    # the enum ksm_cmp_result value the decoder takes for "checksum changed"
    enum = re.search(r"enum ksm_cmp_result \{\n((?:[+ ]\t\w+,\n)+)", series)
    assert enum
    names = [line.strip(" +\t,") for line in enum[1].splitlines()]
    assert names.index("KSM_CMP_VOLATILE") == ksmd_visits._VOLATILE
    merged = tuple(names.index(n) for n in ("KSM_CMP_ZERO", "KSM_CMP_STABLE", "KSM_CMP_PAIR"))
    assert merged == ksmd_visits._MERGED


def test_without_root_or_kernel_support_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(PyksmError, match="root"):
        ksmd_visits.VisitTimer()
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("pyksm.probes.features.kernel_functions", lambda *a, **k: ())
    with pytest.raises(PyksmError, match="cmp_and_merge_page"):
        ksmd_visits.VisitTimer()


class _FakeBcc:
    """bcc's BPF class for the timer's start: records the flags, the probes
    attached and the cleanups; attaching to ``failing`` raises as bcc does."""

    def __init__(self, failing: str = "") -> None:
        self.failing = failing
        self.flags: list[object] = []
        self.attached: list[str] = []
        self.cleaned = 0

    def BPF(self, **kw: object) -> _FakeBcc:
        self.flags.append(kw["cflags"])
        return self

    def attach_kprobe(self, event: str, fn_name: str) -> None:
        if event == self.failing:
            raise Exception(f"Failed to attach BPF program {fn_name} to kprobe")
        self.attached.append(f"{event}:{fn_name}")

    def attach_kretprobe(self, event: str, fn_name: str) -> None:
        self.attached.append(f"{event}:{fn_name}")

    def cleanup(self) -> None:
        self.cleaned += 1


def _start_with(
    monkeypatch: pytest.MonkeyPatch,
    bcc: _FakeBcc,
    functions: Callable[[tuple[str, ...]], tuple[str, ...]],
) -> None:
    import sys

    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(
        "pyksm.probes.features.kernel_functions", lambda names, **k: functions(names)
    )
    monkeypatch.setattr(ksmd_visits, "_symbol", lambda name: {"ksm_scan": 0x20}.get(name, 0x10))
    monkeypatch.setattr("pyksm.probes.headers.ensure_headers", lambda: "headers")
    monkeypatch.setitem(sys.modules, "bcc", bcc)


def test_an_attach_failure_detaches_and_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """bcc raises a plain Exception when a kprobe does not attach: the timer
    detaches what it attached and says which function."""
    bcc = _FakeBcc(failing="unstable_tree_walk")
    _start_with(monkeypatch, bcc, lambda names: names)
    with pytest.raises(PyksmError, match="could not attach to unstable_tree_walk"):
        ksmd_visits.VisitTimer()
    assert bcc.cleaned == 1


def test_an_inlined_walk_is_not_timed_and_the_visits_still_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the compiler inlined unstable_tree_walk() (the series whose hint
    tree is sorted by checksum), the timer attaches to the visit and the
    lookup only, and says that the searches are not timed."""
    bcc = _FakeBcc()
    _start_with(
        monkeypatch, bcc, lambda names: tuple(n for n in names if n != "unstable_tree_walk")
    )
    with ksmd_visits.VisitTimer() as timer:
        assert timer.searches_timed is False
    assert sorted(bcc.attached) == [
        "cmp_and_merge_page:visit_enter",
        "cmp_and_merge_page:visit_return",
        "ksm_hint_rmap_item:lookup_enter",
        "ksm_hint_rmap_item:lookup_return",
    ]
    assert bcc.flags == [["-DHINT_ROOT=0x10ULL", "-DKSM_SCAN=0x20ULL"]]


@pytest.mark.host_bcc
def test_the_program_compiles_and_passes_the_verifier_here() -> None:
    """bcc compiles bpf/ksmd_visits.c against this machine's headers and the
    kernel's verifier takes every probe program (no kprobe is attached: this
    machine's kernel has none). Needs root and bcc; skipped otherwise."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    bcc = pytest.importorskip("bcc")
    from pyksm.probes import headers

    try:
        headers.ensure_headers()
    except PyksmError as e:
        pytest.skip(str(e))
    b = bcc.BPF(
        src_file=str(ksmd_visits.SOURCE), cflags=["-DHINT_ROOT=0x1ULL", "-DKSM_SCAN=0x2ULL"]
    )
    try:
        for prog in ("visit", "walk", "lookup"):
            for end in ("enter", "return"):
                b.load_func(f"{prog}_{end}", bcc.BPF.KPROBE)
        assert list(b["costs"].items()) == []
    finally:
        b.cleanup()


def test_a_summary_keeps_the_costs_typed_and_writes_them_back_alike() -> None:
    from pyksm.experiment.results import Summary

    costs = decode([(0, 6, 2, 10**9), (2, 6, 5, 10**8)])
    s = Summary(mode="ksm++", clk_tck=100, lifetimes={}, ksmd_visits=costs)
    back = Summary.from_json(json.loads(s.to_json()), "summary.json")
    assert back.ksmd_visits == costs
    assert json.loads(s.to_json())["ksmd_visits"]["hinted"]["visits"] == 2


def test_the_runner_detaches_the_timer_while_ksmd_is_between_batches() -> None:
    """The runner pauses ksmd (run=0 takes ksm_thread_mutex) around the
    detach, restores run after it, and detaches anyway when it cannot pause."""
    from pyksm.experiment import runner

    class Knobs:
        def __init__(self, fail: bool = False) -> None:
            self.run, self.fail = 1, fail
            self.log: list[str] = []

        def read_int(self, name: str) -> int:
            if self.fail:
                raise PyksmError("cannot read run")
            return self.run

        def write(self, name: str, value: int) -> None:
            self.log.append(f"{name}={value}")
            self.run = value

    k = Knobs()
    seen: list[int] = []

    def detach() -> str:
        seen.append(k.run)
        return "costs"

    assert runner._between_batches(k, detach) == "costs"  # type: ignore[arg-type]
    assert seen == [0] and k.log == ["run=0", "run=1"]
    broken = Knobs(fail=True)
    assert runner._between_batches(broken, lambda: "detached") == "detached"  # type: ignore[arg-type]
    assert broken.log == []


def test_a_failure_path_detaches_only_a_timer_still_attached() -> None:
    """The runner's exit callback pauses ksmd and detaches only if the timer
    is still attached (stop() already ran on the normal path)."""
    from pyksm.experiment import runner

    class Knobs:
        def __init__(self) -> None:
            self.log: list[str] = []

        def read_int(self, name: str) -> int:
            return 1

        def write(self, name: str, value: int) -> None:
            self.log.append(f"{name}={value}")

    class Timer:
        def __init__(self, running: bool) -> None:
            self.running, self.closed = running, 0

        def close(self) -> None:
            self.closed += 1
            self.running = False

    k, done, attached = Knobs(), Timer(False), Timer(True)
    runner._close_timer(k, done)  # type: ignore[arg-type]
    assert k.log == [] and done.closed == 0
    runner._close_timer(k, attached)  # type: ignore[arg-type]
    assert k.log == ["run=0", "run=1"] and attached.closed == 1

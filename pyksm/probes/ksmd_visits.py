"""Time ksmd's page visits by kind (``pyksm experiment run --visit-cost``).

``bpf/ksmd_visits.c`` puts kprobes on static functions of the patched
mm/ksm.c: cmp_and_merge_page() (one visit) and ksm_hint_rmap_item() (a
hinted page's rmap_item), and on unstable_tree_walk() (one search of the
hint tree or of the unstable tree) where the compiler kept it out of line:
on the series whose hint tree is sorted by checksum, both searches are
inlined into the visit, and ``searches_timed`` is False. ``VisitTimer``
loads it, and ``stop()`` returns what each kind of visit cost over the
time it ran:

  hinted                      a hint brought ksmd to the page
  linear, hinted this round   the linear scan reached a page that a hint
                              put in this round's hint tree (the series
                              passes it by; an earlier one searched both
                              trees again)
  linear                      any other linear visit that compared
  linear, checksum changed    a linear visit that stopped at the checksum

Times are wall time (bpf_ktime_get_ns) from a call's entry to its return,
so a moment ksmd waits for a CPU inside a visit (a tree search yields at
every level) counts too. A kprobe pair adds its own cost to every call (a
few µs under TCG), the same for every kind: compare kinds with each other,
and take ksmd's CPU from a run without the timer.

Each kind also counts its visits that merged the page (with the zero page,
a stable tree page, or a partner from an unstable tree: the results
KSM_CMP_ZERO, _STABLE and _PAIR), which says where the merges came from,
e.g. how many a linear revisit of a hinted page makes.

What can fail: not root, bcc missing, no kprobes or a visit function
inlined away (a kernel without the KSM++ series), no headers. Each is a
PyksmError.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pyksm.errors import PyksmError
from pyksm.probes import features, headers

__all__ = ["KINDS", "SOURCE", "KindCost", "VisitTimer", "decode", "kind_costs_from_json"]

SOURCE = Path(__file__).resolve().parents[2] / "bpf" / "ksmd_visits.c"
FUNCTIONS = ("cmp_and_merge_page", "ksm_hint_rmap_item")
WALK_FUNCTION = "unstable_tree_walk"  # timed where it is not inlined
HINT_ROOT_SYMBOL = "one_hint_tree"
SCAN_SYMBOL = "ksm_scan"
KINDS = ("hinted", "linear, hinted this round", "linear", "linear, checksum changed")
# bpf/ksmd_visits.c: classes of a visit, the parts timed within one
_CLASS_KINDS = ("hinted", "linear, hinted this round", "linear")
_VOLATILE = 1  # enum ksm_cmp_result KSM_CMP_VOLATILE
_MERGED = (2, 3, 4)  # KSM_CMP_ZERO, KSM_CMP_STABLE, KSM_CMP_PAIR
_HINT_WALK, _UNSTABLE_WALK, _LOOKUP = 16, 17, 18


@dataclass(frozen=True)
class KindCost:
    """What one kind of visit cost ksmd, summed over a run (seconds)."""

    visits: int = 0
    visit_s: float = 0.0  # in cmp_and_merge_page()
    hint_walks: int = 0
    hint_walk_s: float = 0.0
    unstable_walks: int = 0
    unstable_walk_s: float = 0.0
    lookup_s: float = 0.0  # hinted: finding the page's rmap_item, outside the visit
    merges: int = 0  # visits that merged the page (zero, stable or pair)

    def us_per_visit(self, seconds: float) -> float | None:
        """``seconds`` (one of the fields) per visit, in µs; None without visits."""
        return seconds / self.visits * 1e6 if self.visits else None

    def __add__(self, other: KindCost) -> KindCost:
        return KindCost(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(KindCost)))

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def kind_costs_from_json(obj: Any, where: str) -> dict[str, KindCost]:
    """summary.json's ``ksmd_visits``: {kind: KindCost fields}; a clear error otherwise."""
    if not isinstance(obj, dict):
        raise PyksmError(f"{where}: ksmd_visits is an object by kind, not {type(obj).__name__}")
    out = {}
    names = {f.name for f in fields(KindCost)}
    for kind, cost in obj.items():
        if kind not in KINDS or not isinstance(cost, dict) or set(cost) - names:
            raise PyksmError(f"{where}: ksmd_visits: bad entry {kind!r}")
        for name, value in cost.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PyksmError(f"{where}: ksmd_visits[{kind!r}].{name} is not a count")
        out[kind] = KindCost(
            visits=int(cost.get("visits", 0)),
            visit_s=float(cost.get("visit_s", 0.0)),
            hint_walks=int(cost.get("hint_walks", 0)),
            hint_walk_s=float(cost.get("hint_walk_s", 0.0)),
            unstable_walks=int(cost.get("unstable_walks", 0)),
            unstable_walk_s=float(cost.get("unstable_walk_s", 0.0)),
            lookup_s=float(cost.get("lookup_s", 0.0)),
            merges=int(cost.get("merges", 0)),
        )
    return out


def decode(rows: Iterable[tuple[int, int, int, int]]) -> dict[str, KindCost]:
    """The program's map, as (class, what, calls, ns) rows, by kind (those seen)."""
    out: dict[str, KindCost] = {}
    for cls, what, calls, ns in rows:
        if not 0 <= cls < len(_CLASS_KINDS):
            continue
        s = ns / 1e9
        kind = _CLASS_KINDS[cls]
        if what == _HINT_WALK:
            part = KindCost(hint_walks=calls, hint_walk_s=s)
        elif what == _UNSTABLE_WALK:
            part = KindCost(unstable_walks=calls, unstable_walk_s=s)
        elif what == _LOOKUP:
            part = KindCost(lookup_s=s)
        else:
            if what == _VOLATILE and cls:
                kind = "linear, checksum changed"
            part = KindCost(visits=calls, visit_s=s, merges=calls if what in _MERGED else 0)
        out[kind] = out.get(kind, KindCost()) + part
    return {k: out[k] for k in KINDS if k in out}


def _symbol(name: str, kallsyms: Path = Path("/proc/kallsyms")) -> int:
    try:
        with open(kallsyms) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return int(parts[0], 16)
    except OSError as e:
        raise PyksmError(f"--visit-cost: cannot read {kallsyms}: {e.strerror}") from None
    raise PyksmError(f"--visit-cost: no {name} in {kallsyms} (a kernel without the KSM++ series)")


class VisitTimer:
    """The loaded program; ``stop()`` detaches it and returns the costs."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise PyksmError("--visit-cost needs root")
        found = set(
            features.kernel_functions((*FUNCTIONS, WALK_FUNCTION), tracefs=features.tracefs())
        )
        missing = set(FUNCTIONS) - found
        if missing:
            raise PyksmError(
                f"--visit-cost: no kprobe target {', '.join(sorted(missing))} in this kernel",
                hint="it needs the KSM++ test kernel (kprobes, the series' mm/ksm.c)",
            )
        root, scan = _symbol(HINT_ROOT_SYMBOL), _symbol(SCAN_SYMBOL)
        if root == 0 or scan == 0:
            raise PyksmError("--visit-cost: kernel addresses are hidden (kptr_restrict)")
        self.searches_timed = WALK_FUNCTION in found
        attach = {"cmp_and_merge_page": "visit", "ksm_hint_rmap_item": "lookup"}
        if self.searches_timed:
            attach[WALK_FUNCTION] = "walk"
        headers.ensure_headers()
        try:
            from bcc import BPF
        except ImportError:
            raise PyksmError("bcc is not importable (Debian: python3-bpfcc)") from None
        try:
            self.bpf: Any = BPF(
                src_file=str(SOURCE),
                cflags=[f"-DHINT_ROOT={root:#x}ULL", f"-DKSM_SCAN={scan:#x}ULL"],
            )
        except Exception as e:  # bcc raises plain Exception on compile/load errors
            raise PyksmError(f"bcc could not load {SOURCE.name}: {e}") from None
        self.running = True
        fn = ""
        try:
            for fn, prog in attach.items():
                self.bpf.attach_kprobe(event=fn, fn_name=f"{prog}_enter")
                self.bpf.attach_kretprobe(event=fn, fn_name=f"{prog}_return")
        except BaseException as e:
            self.close()  # nothing stays attached when the start fails
            if isinstance(e, Exception):  # bcc's attach errors are plain Exceptions
                raise PyksmError(f"--visit-cost: could not attach to {fn}: {e}") from None
            raise

    def _rows(self) -> Iterator[tuple[int, int, int, int]]:
        for k, v in self.bpf["costs"].items():
            yield k.cls, k.what, v.calls, v.ns

    def reset(self) -> None:
        """Forget what was counted so far."""
        self.bpf["costs"].clear()

    def stop(self) -> dict[str, KindCost]:
        """Detach; what each kind of visit cost since the start."""
        try:
            return decode(list(self._rows()))
        finally:
            self.close()

    def close(self) -> None:
        """Detach everything (again: a no-op)."""
        if self.running:
            self.running = False
            self.bpf.cleanup()

    def __enter__(self) -> VisitTimer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

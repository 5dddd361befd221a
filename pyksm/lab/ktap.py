"""Read KUnit's KTAP results out of a kernel console log.

Built-in KUnit suites run at boot and print KTAP to the console::

    KTAP version 1
    1..1
        KTAP version 1
        # Subtest: ksm_hints
        1..3
        ok 1 push_pop_lifo
        not ok 2 overflow_drops_oldest
        ok 3 expiry # SKIP no clock
    not ok 1 ksm_hints
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")
# A (K)TAP result line: indent, verdict, name ("- " optional, may be empty),
# directive. kselftest's TAP (pyksm.lab.selftests) reads its lines with it too.
RESULT = re.compile(r"^(\s*)(not ok|ok) \d+(?: -)? ?([^#]*?)\s*(#\s*(SKIP|TODO)\b.*)?$")
_SUBTEST = re.compile(r"^(\s*)# Subtest: (\S+)")


@dataclass
class Suite:
    name: str
    ok: bool | None = None  # None: the suite's own result line never came (crash?)
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse(console: str) -> dict[str, Suite]:
    suites: dict[str, Suite] = {}
    current: Suite | None = None
    for raw in console.splitlines():
        line = _TS.sub("", raw.rstrip())
        if m := _SUBTEST.match(line):
            if len(m.group(1)) <= 4:  # a suite (cases within parameterised tests nest deeper)
                current = suites.setdefault(m.group(2), Suite(m.group(2)))
            continue
        m = RESULT.match(line)
        if not m or current is None:
            continue
        indent, verdict, name, _, directive = m.groups()
        name = name.strip()
        if not indent and name == current.name:
            current.ok = verdict == "ok"
            current = None
        elif len(indent) <= 4 and indent:
            if directive == "SKIP":
                current.skipped.append(name)
            elif verdict == "ok":
                current.passed.append(name)
            else:
                current.failed.append(name)
    return suites

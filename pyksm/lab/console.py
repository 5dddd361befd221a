"""Find kernel bug reports in a console log.

An oops, BUG, KASAN or KFENCE report, lockdep splat, WARN, soft lockup, RCU
stall or hung-task warning fails a VM run even when the command succeeded.
Works on saved logs too: ``pyksm vm scan-log FILE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (kind, pattern) in order of precedence; the first match names the report.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pat))
    for kind, pat in (
        ("kasan", r"BUG: KASAN: "),
        ("kfence", r"BUG: KFENCE: "),
        (
            "lockdep",
            r"WARNING: (possible (circular|recursive) locking|inconsistent lock state"
            r"|suspicious RCU usage|bad unlock balance|lock held when returning)",
        ),
        ("lockdep", r"WARNING: .*lock.* detected"),
        ("sleep-in-atomic", r"BUG: sleeping function called from invalid context"),
        ("soft-lockup", r"watchdog: BUG: soft lockup"),
        ("hung-task", r"INFO: task .+ blocked for more than \d+ seconds"),
        ("rcu-stall", r"rcu: INFO: \w+ detected stalls"),
        ("bug", r"kernel BUG at "),
        (
            "bug",
            r"BUG: (unable to handle|Bad page|Bad rss|scheduling while atomic|"
            r"non-zero pgtables|workqueue lockup|[a-z_ ]+ leak)",
        ),
        ("bug", r"\bBUG: "),
        ("oops", r"Oops: "),
        ("oops", r"general protection fault"),
        ("panic", r"Kernel panic - not syncing"),
        ("ubsan", r"UBSAN: "),
        ("warning", r"WARNING: CPU: \d+ PID: \d+ at "),
    )
)

# Strip the "[   12.345678] " timestamp prefix if present.
_TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_END = re.compile(r"(---\[ end trace|^={20,}$|Kernel Offset:|---\[ end Kernel panic)")


@dataclass(frozen=True)
class Report:
    kind: str
    headline: str
    text: str
    line: int  # 1-based line of the headline in the log


def scan(log: str, max_lines: int = 60) -> list[Report]:
    """All bug reports in ``log``, each with up to ``max_lines`` of context."""
    lines = log.splitlines()
    reports: list[Report] = []
    i = 0
    while i < len(lines):
        body = _TS.sub("", lines[i])
        kind = next((k for k, p in _PATTERNS if p.search(body)), None)
        if kind is None:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and j - i < max_lines:
            nxt = _TS.sub("", lines[j])
            if any(p.search(nxt) for _, p in _PATTERNS):
                break  # the next report starts here
            j += 1
            if _END.search(nxt):
                break
        reports.append(Report(kind, body.strip(), "\n".join(lines[i:j]), i + 1))
        i = j
    return reports

"""ksmd's visits timed by kind (pyksm.probes.ksmd_visits) on the patched kernel."""

from __future__ import annotations

import json
from pathlib import Path

from tests.vm.conftest import REPO, SLOW, Boot, summarize

GUEST = Path(__file__).parent / "guest"


def test_visits_are_timed_by_kind_and_the_probes_go_away(
    boot: Boot, python: str, tmp_path: Path
) -> None:
    """Hinted visits, linear visits of pages hinted this round and other
    linear visits are timed apart; where the kernel keeps the tree walk out
    of line, hinted visits search the hint tree and then the unstable tree
    and linear visits never search the hint tree (patch 11's promise,
    measured); the timer's kprobes are listed while it runs and gone after
    stop()."""
    out = tmp_path / "visits.json"
    result = boot(
        [python, str(GUEST / "ksmd_visits.py"), str(out)],
        timeout=900.0 * SLOW,
        env={"PYTHONPATH": str(REPO)},
    )
    assert result.command_exit == 0, result.output_log.read_text()[-3000:]
    r = json.loads(out.read_text())
    costs = r["costs"]
    summarize(
        "ksmd visits: "
        + "; ".join(
            f"{kind} {c['visits']} visits at {c['visit_s'] / c['visits'] * 1e6:.0f} µs"
            for kind, c in costs.items()
            if c["visits"]
        )
    )
    assert r["listed_before"] == []
    assert len(r["listed_while"]) >= 2, r["listed_while"]
    assert r["listed_after"] == []
    hinted = costs["hinted"]
    assert hinted["visits"] >= r["hint_pages_scanned"] >= 200
    assert 0 < hinted["lookup_s"] < hinted["visit_s"]
    # a linear revisit is of a page hinted in the same round: at most one per hinted page
    revisits = costs.get("linear, hinted this round", {"visits": 0, "hint_walks": 0})
    assert revisits["visits"] <= hinted["visits"]
    linear = costs["linear"]
    assert linear["visits"] > 1000
    if r["searches_timed"]:
        assert hinted["hint_walks"] >= 200 and hinted["unstable_walks"] >= 200
        assert 0 < hinted["hint_walk_s"] + hinted["unstable_walk_s"] < hinted["visit_s"]
        assert revisits["hint_walks"] == revisits["visits"]
        assert linear["unstable_walks"] > 0
        assert linear["hint_walks"] == 0, "a linear visit searched the hint tree"
    else:  # the series' own kernel: its searches are inlined into the visit
        assert all(c["hint_walks"] == c["unstable_walks"] == 0 for c in costs.values())

"""The exact oracle of an experiment, from the guests' content ledgers.

Each guest publishes frame -> content id (see ``guest.py``). At every sample
the ledgers give, exactly: present pages, distinct contents, and so the
pages that could be shared (present - distinct, the ceiling of KSM's
pages_sharing), split into file-backed (disk blocks) and anonymous; and the
lifetime of every sharing opportunity (first and last sample at which its
content was held by at least two pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyksm.experiment.guest import IMAGE_TAG, UNIQUE_TAG

# Disk-block ids are counted with a bincount over block numbers (linear, where
# np.unique sorts): one sample a second must stay cheap under emulation,
# where it competes with the workload for the same CPUs.
_MAX_BLOCKS = 1 << 24

# Lifetime bins in seconds: the seed's (< 1 s, 1-30 s, > 30 s) and finer ones.
LIFETIME_EDGES = (0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, float("inf"))


@dataclass
class OracleSample:
    present: int
    distinct: int
    opportunities: int
    file: int
    anon: int


@dataclass
class LedgerOracle:
    paths: list[Path]
    open_since: dict[int, float] = field(default_factory=dict)
    lifetimes: list[float] = field(default_factory=list)
    _prev: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # Each guest's ledger as read by the last sample().
    last_parts: list[np.ndarray] = field(default_factory=list)

    def _read(self) -> np.ndarray:
        parts = [np.fromfile(p, dtype=np.int64) for p in self.paths]
        self.last_parts = parts
        ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        nonzero: np.ndarray = ids[ids != 0]
        return nonzero

    def sample(self, now: float) -> OracleSample:
        return self.observe(self._read(), now)

    @staticmethod
    def count(ids: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """(number of distinct ids that cannot repeat, the other distinct ids,
        their counts). Ids tagged UNIQUE_TAG are distinct by construction
        (see guest.py) and are not sorted or counted one by one."""
        is_unique = (ids & UNIQUE_TAG) != 0
        is_file = ((ids & IMAGE_TAG) != 0) & ~is_unique
        blocks = ids[is_file] & ~IMAGE_TAG
        rest = ids[~is_unique & ~is_file]
        if blocks.size and int(blocks.max()) < _MAX_BLOCKS:
            bc = np.bincount(blocks)
            fu = np.flatnonzero(bc)
            f_ids, f_counts = fu.astype(np.int64) | IMAGE_TAG, bc[fu]
        else:
            f_ids, f_counts = np.unique(ids[is_file], return_counts=True)
        r_ids, r_counts = np.unique(rest, return_counts=True)
        return (
            int(is_unique.sum()),
            np.concatenate([f_ids, r_ids]),
            np.concatenate([f_counts, r_counts]),
        )

    def observe(self, ids: np.ndarray, now: float) -> OracleSample:
        n_unique, uniq, counts = self.count(ids)
        dup = counts >= 2
        extra = counts - 1
        is_file = (uniq & IMAGE_TAG) != 0
        file_opp = int(extra[dup & is_file].sum())
        anon_opp = int(extra[dup & ~is_file].sum())
        dups = uniq[dup]
        for i in np.setdiff1d(dups, self._prev, assume_unique=True).tolist():
            self.open_since[i] = now
        for i in np.setdiff1d(self._prev, dups, assume_unique=True).tolist():
            start = self.open_since.pop(i, None)
            if start is not None:
                self.lifetimes.append(now - start)
        self._prev = dups
        return OracleSample(
            present=int(ids.size),
            distinct=n_unique + int(uniq.size),
            opportunities=int(ids.size - n_unique - uniq.size),
            file=file_opp,
            anon=anon_opp,
        )

    def histogram(self, now: float) -> dict[str, object]:
        """Lifetimes of ended opportunities; open ones are right-censored."""
        ended = np.asarray(self.lifetimes, dtype=float)
        censored = np.asarray([now - s for s in self.open_since.values()], dtype=float)
        edges = np.asarray(LIFETIME_EDGES)
        return {
            "edges_s": list(LIFETIME_EDGES),
            "ended": np.histogram(ended, bins=edges)[0].tolist(),
            "open_at_end": np.histogram(censored, bins=edges)[0].tolist(),
        }

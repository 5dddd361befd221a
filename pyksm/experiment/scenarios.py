"""Built-in scenarios, shaped like the seed's experiments (two guests of
512 MiB, most of their memory not duplicate; 100 pages / 20 ms).

Every guest is a QEMU-like process (see ``guest.py``): its RAM is one
MADV_MERGEABLE anonymous mapping; most of it holds unique content (guest
kernel, programs, data); a page-cache part is filled from a shared disk image
with preadv() into guest pages, as QEMU's aio=threads does; a heap part is
rewritten at a set rate (anonymous churn). Workloads are fixed per scenario
and seed and never tuned per mode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pyksm.errors import PyksmError
from pyksm.experiment.qemu_scenarios import QEMU_SCENARIOS, QemuScenario

# The random readers' pace: one that both modes sustain under emulation on
# the 2-CPU test machine (6 MiB/s was not: guests read 40-60 % of it, and less
# in ksm++ than in ksm, so the modes ran different workloads). The runner
# warns when a guest falls below its pace.
RANDOM_READ_MIB_S = 3.0


@dataclass(frozen=True)
class GuestSpec:
    name: str
    ram_mib: int = 512
    cache_mib: int = 192  # guest page cache (LRU of disk blocks)
    heap_mib: int = 64  # anonymous memory rewritten at churn_pages_s
    churn_pages_s: int = 200
    # I/O pattern: "sequential" (kernel-build: a file list in a fixed order,
    # with local reordering), "random" (apache: files drawn at random),
    # "none" (no I/O).
    io: str = "sequential"
    read_mib_s: float = 4.0  # the workload's reads (cache hits included)
    files: str = "tree"  # which file set of the image the guest reads
    order_seed: int = 1
    # Anonymous duplicates (no-io): pages of this many MiB of heap are written
    # with content shared across guests (same seed), at churn_pages_s.
    shared_heap_mib: int = 0
    start_delay_s: float = 0.0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    guests: tuple[GuestSpec, ...]
    image_mib: int = 384
    duration_s: float = 180.0
    seed: int = 42
    extra: dict[str, str] = field(default_factory=dict)
    # A steady-state scenario: the report reads captured sharing over the last
    # this many seconds and its trend (pyksm.analysis.steady). None: not one.
    steady_window_s: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _two(io: str, **kw: object) -> tuple[GuestSpec, GuestSpec]:
    a = GuestSpec(name="guest-a", io=io, order_seed=1, **kw)  # type: ignore[arg-type]
    b = GuestSpec(name="guest-b", io=io, order_seed=2, start_delay_s=3.0, **kw)  # type: ignore[arg-type]
    return a, b


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "kernel-build",
            "Two guests read the same source-tree files in a similar order (guest-b 3 s "
            "behind, local reordering), 4 MiB/s each, 192 MiB page cache, plus heap churn.",
            _two("sequential"),
        ),
        Scenario(
            "apache",
            "Two guests serve the same files in different random orders, 3 MiB/s of "
            "requests each; the file set (192 MiB) is larger than their caches (128 MiB): "
            "about a third of the requests miss and are read from disk, evicting "
            "blocks, so opportunities are short-lived.",
            _two("random", cache_mib=128, read_mib_s=RANDOM_READ_MIB_S),
        ),
        Scenario(
            "steady",
            "apache for 20 minutes: two guests serve the same files (192 MiB) in different "
            "random orders, 3 MiB/s of requests each, with 128 MiB caches. The reads fill "
            "the caches in the first minutes; from then on every miss evicts a block and "
            "reads into its frame, so guest frames are reused and merged pages are "
            "COW-broken all the time. Captured sharing is read over the last 10 minutes "
            "(the steady state), with its trend.",
            _two("random", cache_mib=128, read_mib_s=RANDOM_READ_MIB_S),
            duration_s=1200.0,
            steady_window_s=600.0,
        ),
        Scenario(
            "mixed",
            "One kernel-build guest (the source tree, in order) and one apache guest "
            "(files drawn at random from the whole 384 MiB image, the tree included, "
            "128 MiB cache): duplicates only where the server happens to hold tree "
            "blocks, short-lived; most I/O of both creates no duplicate.",
            (
                GuestSpec(name="guest-a", io="sequential", files="tree"),
                GuestSpec(
                    name="guest-b",
                    io="random",
                    files="all",
                    cache_mib=128,
                    read_mib_s=RANDOM_READ_MIB_S,
                    order_seed=2,
                ),
            ),
        ),
        Scenario(
            "unique-io",
            "Hints without duplicates: the kernel-build pace, but guest-a reads the source "
            "tree and guest-b the other half of the image (larger files), so every read is "
            "hinted and no hinted page has a partner. What the hints cost ksmd when they "
            "find nothing.",
            (
                GuestSpec(name="guest-a", io="sequential", files="tree"),
                GuestSpec(
                    name="guest-b", io="sequential", files="www", order_seed=2, start_delay_s=3.0
                ),
            ),
        ),
        Scenario(
            "no-io",
            "No disk I/O: both guests write the same anonymous content into 64 MiB of "
            "heap at 100 pages/s, so a duplicate lives about 160 s (anonymous duplicates "
            "only; no hints are possible).",
            _two("none", heap_mib=96, shared_heap_mib=64, churn_pages_s=100),
        ),
    )
}


# The longest run of one mode ``--duration`` accepts (one day): a longer one
# is a typo, and would hold the VM for days.
MAX_DURATION_S = 86_400.0


def check_duration(seconds: float) -> float:
    """A run's duration in seconds: finite, > 0 and at most MAX_DURATION_S."""
    if not (0 < seconds <= MAX_DURATION_S):  # also False for NaN
        raise PyksmError(
            f"duration {seconds:g} s: must be more than 0 and at most {MAX_DURATION_S:.0f} s"
        )
    return seconds


def parse_duration(text: str) -> float:
    """``--duration`` seconds (see check_duration)."""
    try:
        seconds = float(text)
    except ValueError:
        raise PyksmError(f"not a number of seconds: {text!r}") from None
    return check_duration(seconds)


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise PyksmError(
            f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})"
        ) from None


def names() -> list[str]:
    """Every scenario: the ledger ones (above) and the real-QEMU ones."""
    return sorted([*SCENARIOS, *QEMU_SCENARIOS])


def lookup(name: str) -> Scenario | QemuScenario:
    """A scenario of either kind by name."""
    if name in QEMU_SCENARIOS:
        return QEMU_SCENARIOS[name]
    if name in SCENARIOS:
        return SCENARIOS[name]
    raise PyksmError(f"unknown scenario {name!r} (choose from {', '.join(names())})")

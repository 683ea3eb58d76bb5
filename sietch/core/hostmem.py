"""Host protection: refuse a new sandbox rather than let the kernel's OOM killer pick a VM.

A create (or resume) is refused when the host's ``MemAvailable`` minus what the
new sandbox is expected to use would fall below ``SIETCH_MEMORY_RESERVE_MIB``.
What a sandbox is expected to use is what running ones *do* use (their PSS, as
last sampled by :mod:`sietch.core.usage`), not the RAM they were given: a
guest's RAM is lazily touched, and a template's pages are one page cache shared
by every sandbox restored from it. The check itself reads only /proc/meminfo.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable

from sietch.config import MiB
from sietch.errors import Unavailable

FIRST_GUESS = 64 * MiB
"""Expected use of a sandbox when none runs to measure (60 idle ones took 63.8 MiB each)."""


def mem_available(meminfo: str | None = None) -> int:
    """The kernel's estimate of memory available to new work without swapping, in bytes."""
    if meminfo is None:
        with open("/proc/meminfo") as f:
            meminfo = f.read()
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemAvailable in /proc/meminfo")


def expected_use(samples: Iterable[int]) -> int:
    """What one more sandbox will use: the median of what running ones use."""
    values = [v for v in samples if v > 0]
    return int(statistics.median(values)) if values else FIRST_GUESS


class MemoryGuard:
    """Refuses new sandboxes that would leave less than ``reserve`` bytes available."""

    def __init__(
        self,
        reserve: int,
        used: Callable[[], Iterable[int | None]],
        available: Callable[[], int] = mem_available,
    ) -> None:
        self.reserve = reserve
        self.used = used
        """What each running sandbox used when last sampled (PSS, bytes; None: unknown)."""
        self.available = available

    def estimate(self) -> int:
        """Expected use of one more sandbox."""
        return expected_use(v for v in self.used() if v is not None)

    def check(self, what: str = "a new sandbox") -> None:
        """:class:`Unavailable` (503) if ``what`` would take the host below the reserve."""
        if self.reserve <= 0:
            return
        available, needed = self.available(), self.estimate()
        if available - needed < self.reserve:
            raise Unavailable(
                f"the host is low on memory: {available // MiB} MiB available, {what} "
                f"needs ~{needed // MiB} MiB and {self.reserve // MiB} MiB are kept in reserve "
                "(SIETCH_MEMORY_RESERVE_MIB); delete or hibernate sandboxes, or retry later",
                available_mib=available // MiB,
                reserve_mib=self.reserve // MiB,
                expected_mib=needed // MiB,
            )

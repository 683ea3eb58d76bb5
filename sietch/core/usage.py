"""What each sandbox uses: sampled on the host every few seconds, the guest asked on demand.

The host side (cgroup CPU and memory, QEMU's PSS, the disk overlay's allocated
bytes) is cheap and read in the background into a short ring per sandbox, so
the history and the Prometheus series cost no I/O when read. The guest side
(its own memory use and network counters) needs the agent, which wakes an
idle guest: it is read only when someone asks for a sandbox's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from pydantic import BaseModel

from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxState
from sietch.errors import SietchError
from sietch.vmm import process

log = logging.getLogger(__name__)

_TICK = os.sysconf("SC_CLK_TCK")
GUEST_TIMEOUT_S = 2.0


class UsageSample(BaseModel):
    """One sandbox's use at one moment; None where this host or guest can't tell."""

    at: datetime
    uptime_s: float
    """Since the sandbox was created (or restored)."""
    cpu_seconds: float | None = None
    """Host CPU time used by its QEMU and helpers (its cgroup; QEMU alone without one)."""
    cpu_percent: float | None = None
    """Of one core, since the previous sample."""
    memory_bytes: int | None = None
    """Host memory charged to its cgroup (guest RAM it touched, QEMU, page cache)."""
    memory_limit_bytes: int | None = None
    memory_pss_bytes: int | None = None
    """QEMU's proportional set size: shared template pages counted once across sandboxes."""
    pids: int | None = None
    disk_bytes: int | None = None
    """Host bytes allocated by its disk overlay (what it wrote beyond its image)."""
    guest_memory_used_bytes: int | None = None
    """The guest's own view: MemTotal - MemAvailable (on demand only)."""
    guest_memory_total_bytes: int | None = None
    guest_disk_used_bytes: int | None = None
    """Used bytes of the guest's root filesystem (on demand only)."""
    net_rx_bytes: int | None = None
    """Bytes the guest received on eth0 (on demand only)."""
    net_tx_bytes: int | None = None


class SandboxMetrics(BaseModel):
    sandbox_id: str
    state: SandboxState
    current: UsageSample
    history: list[UsageSample]
    """Host-side samples, oldest first, every ``SIETCH_METRICS_INTERVAL_S``."""


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None


def _allocated(path: os.PathLike[str]) -> int | None:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return None


PSS_EVERY = 6
"""Rounds between PSS readings (30 s at the default interval): smaps_rollup walks the page
tables of the guest's RAM, 7 ms for an idle 512 MiB guest and 80-110 ms for big busy ones
here, where the cgroup files cost microseconds."""


def host_sample(
    sandbox: LiveSandbox, previous: UsageSample | None, pss: bool = True
) -> UsageSample:
    """The host's view of one sandbox now (blocking reads of /proc and /sys: run in a thread);
    without ``pss`` the previous PSS is carried over."""
    now = datetime.now(UTC)
    sample = UsageSample(at=now, uptime_s=(now - sandbox.info.created_at).total_seconds())
    pid = sandbox.machine.pid
    if sandbox.cgroup is not None:
        with contextlib.suppress(OSError):
            use = sandbox.cgroup.usage()
            sample.cpu_seconds, sample.memory_bytes, sample.pids = (
                use.cpu_seconds or None, use.memory_bytes, use.pids
            )  # fmt: skip
            if sandbox.limits is not None:
                sample.memory_limit_bytes = sandbox.limits.memory_bytes
    if pid is not None:
        if sample.cpu_seconds is None:
            sample.cpu_seconds = _proc_cpu_seconds(pid)
        if pss or previous is None:
            sample.memory_pss_bytes = process.pss_bytes(pid)
        else:
            sample.memory_pss_bytes = previous.memory_pss_bytes
    sample.disk_bytes = _allocated(sandbox.machine.config.root_disk)
    if previous is not None and previous.cpu_seconds is not None and sample.cpu_seconds:
        elapsed = (now - previous.at).total_seconds()
        if elapsed > 0:
            used = max(0.0, sample.cpu_seconds - previous.cpu_seconds)
            sample.cpu_percent = round(100 * used / elapsed, 1)
    return sample


async def guest_sample(sandbox: LiveSandbox, sample: UsageSample) -> None:
    """Add the guest's own figures to ``sample``; skipped for a paused or silent guest
    (or one whose agent predates the ``usage`` operation)."""
    if sandbox.info.state is not SandboxState.RUNNING:
        return
    try:
        async with asyncio.timeout(GUEST_TIMEOUT_S):
            guest = await sandbox.agent.call("usage")
    except (SietchError, TimeoutError) as exc:
        sandbox.log.debug("no guest metrics: %s", exc)
        return
    total, available = guest.get("memory_total"), guest.get("memory_available")
    if total is not None and available is not None:
        sample.guest_memory_used_bytes, sample.guest_memory_total_bytes = total - available, total
    sample.guest_disk_used_bytes = guest.get("disk_used")
    if (eth0 := guest.get("net", {}).get("eth0")) is not None:
        sample.net_rx_bytes, sample.net_tx_bytes = eth0


class UsageSampler:
    """A ring of host-side samples per live sandbox, filled in the background."""

    def __init__(
        self, sandboxes: Callable[[], Iterable[LiveSandbox]], interval_s: float, size: int
    ) -> None:
        self.sandboxes = sandboxes
        self.interval_s = interval_s
        self.size = size
        self.rings: dict[str, deque[UsageSample]] = {}
        self.rounds = 0

    def latest(self) -> dict[str, UsageSample]:
        return {sid: ring[-1] for sid, ring in self.rings.items() if ring}

    async def sample_all(self) -> None:
        """One round over every live sandbox (the reads in a thread, the rings on the loop)."""
        live = {sb.id: sb for sb in self.sandboxes()}
        for gone in self.rings.keys() - live.keys():
            del self.rings[gone]
        previous = self.latest()
        pss = self.rounds % PSS_EVERY == 0
        self.rounds += 1

        def sample() -> dict[str, UsageSample]:
            return {sid: host_sample(sb, previous.get(sid), pss) for sid, sb in live.items()}

        for sandbox_id, new in (await asyncio.to_thread(sample)).items():
            self.rings.setdefault(sandbox_id, deque(maxlen=self.size)).append(new)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample_all()
            except Exception:  # a bug here must not end the sampling for good
                log.exception("sampling sandbox usage failed")
            await asyncio.sleep(max(0.1, self.interval_s - (time.monotonic() - started)))

    async def report(self, sandbox: LiveSandbox) -> SandboxMetrics:
        """Current use (host and guest) and the history of one live sandbox."""
        history = list(self.rings.get(sandbox.id, ()))
        previous = history[-1] if history else None
        current = await asyncio.to_thread(host_sample, sandbox, previous)
        await guest_sample(sandbox, current)
        return SandboxMetrics(
            sandbox_id=sandbox.id, state=sandbox.info.state, current=current, history=history
        )

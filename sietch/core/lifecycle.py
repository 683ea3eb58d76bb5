"""Timeouts, idleness and snapshot expiry: when a sandbox is killed, paused or hibernated.

One :class:`Lifecycle` per manager runs one loop: it sleeps until the nearest
deadline (or until something changes one: a lease let go, a new timeout), acts
on what is due, and sleeps again. Deadlines:

- a sandbox's ``expires_at`` (``timeout_s`` after creation, and again after
  every resume): ``on_timeout`` happens; the record keeps it, so it survives
  a server restart;
- ``idle_timeout_s`` after its last activity, while no lease is held and no
  process started through the API runs in it (asked of its agent before
  acting): ``on_idle`` happens. Idleness is in-memory: a restart counts afresh;
- a snapshot's ``expires_at`` (``ttl_s``): deleted once nothing uses it.

Activity is marked by whatever drives a sandbox, through :class:`Activity`: the
manager for every call made through ``Manager.use`` (commands, files,
processes), the server for its port proxy and relays, and any other front end
(a desktop viewer, an IDE bridge, E2B's API) for as long as it has a
connection open: ``with manager.activity.busy(sandbox_id): ...``, or
``lease = manager.activity.lease(sandbox_id)`` ... ``lease.release()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxInfo, SandboxState, TimeoutAction
from sietch.core.store import Store
from sietch.errors import SietchError

log = logging.getLogger(__name__)

RETRY_S = 5.0
"""How soon an action that failed (the sandbox busy, say) is tried again."""


class Lease:
    """One holder keeping a sandbox busy (not idle) until :meth:`release` (idempotent)."""

    def __init__(self, activity: Activity, sandbox_id: str) -> None:
        self._activity = activity
        self.sandbox_id = sandbox_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._activity.let_go(self.sandbox_id)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Activity:
    """Who is using which sandbox, and since when nobody has.

    Any front end may hold leases: a sandbox with one held is never idle, and
    letting the last one go counts as activity then.
    """

    def __init__(self) -> None:
        self._leases: dict[str, int] = defaultdict(int)
        self._last: dict[str, float] = {}

    def touch(self, sandbox_id: str) -> None:
        """Mark an API call on the sandbox now."""
        self._last[sandbox_id] = time.monotonic()

    def lease(self, sandbox_id: str) -> Lease:
        """Keep the sandbox busy until the lease is released."""
        self._leases[sandbox_id] += 1
        self.touch(sandbox_id)
        return Lease(self, sandbox_id)

    @contextlib.contextmanager
    def busy(self, sandbox_id: str) -> Iterator[None]:
        """Keep the sandbox busy for the ``with`` block (a request, a relay, a session)."""
        with self.lease(sandbox_id):
            yield

    def let_go(self, sandbox_id: str) -> None:
        self._leases[sandbox_id] -= 1
        if self._leases[sandbox_id] <= 0:
            del self._leases[sandbox_id]
            self.touch(sandbox_id)  # its idle time starts now

    def leases(self, sandbox_id: str) -> int:
        return self._leases.get(sandbox_id, 0)

    def idle_since(self, sandbox_id: str) -> float | None:
        """The monotonic time of its last activity; None while a lease is held."""
        if self._leases.get(sandbox_id):
            return None
        return self._last.setdefault(sandbox_id, time.monotonic())

    def forget(self, sandbox_id: str) -> None:
        self._last.pop(sandbox_id, None)


class LifecycleHost(Protocol):
    """Implemented by :class:`sietch.core.manager.Manager`."""

    @property
    def store(self) -> Store: ...

    def live(self, sandbox_id: str) -> LiveSandbox | None: ...

    def live_sandboxes(self) -> list[LiveSandbox]: ...

    async def timed_out(self, sandbox_id: str, action: TimeoutAction, why: str) -> None:
        """Kill, pause or hibernate the sandbox."""

    async def expire_snapshot(self, snapshot_id: str) -> None:
        """Delete an expired snapshot unless something uses it."""


def arm(info: SandboxInfo) -> None:
    """Start ``timeout_s`` from now (None: no deadline)."""
    info.expires_at = (
        datetime.now(UTC) + timedelta(seconds=info.timeout_s) if info.timeout_s else None
    )


class Lifecycle:
    """The timer of one manager: acts on timeouts, idleness and snapshot TTLs."""

    def __init__(self, host: LifecycleHost) -> None:
        self.host = host
        self._changed = asyncio.Event()
        self.activity = Activity()
        self._transitions: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._not_before: dict[str, float] = {}
        """Monotonic time before which a failed or declined action isn't tried again."""

    def transition(self, sandbox_id: str) -> asyncio.Lock:
        """Held while a sandbox hibernates or wakes, so two wakes don't race."""
        return self._transitions[sandbox_id]

    def changed(self) -> None:
        """A deadline moved: look again."""
        self._changed.set()

    def forget(self, sandbox_id: str) -> None:
        self.activity.forget(sandbox_id)
        self._not_before.pop(sandbox_id, None)
        lock = self._transitions.get(sandbox_id)
        if lock is not None and not lock.locked():
            del self._transitions[sandbox_id]

    async def run(self) -> None:
        """Until cancelled: act on what is due, sleep until the next deadline or change."""
        while True:
            self._changed.clear()
            try:
                wait = await self._tick()
            except Exception:  # a bug here must not end every timeout for good
                log.exception("the lifecycle loop failed; trying again in %gs", RETRY_S)
                wait = RETRY_S
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancellation that
            # arrives as the event is set, and close() then waits for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._changed.wait()

    async def _tick(self) -> float | None:
        """Act on every due deadline; the seconds until the next one (None: none)."""
        now, wall = time.monotonic(), datetime.now(UTC)
        nearest: list[float] = []
        for sandbox in self.host.live_sandboxes():
            if self._not_before.get(sandbox.id, 0.0) > now:
                nearest.append(self._not_before[sandbox.id] - now)
                continue
            due = await self._due(sandbox, now, wall)
            if due is not None:
                nearest.append(due)
        for snap in self.host.store.all_snapshots():
            if snap.expires_at is None:
                continue
            left = (snap.expires_at - wall).total_seconds()
            if left <= 0:
                await self.host.expire_snapshot(snap.id)
            else:
                nearest.append(left)
        return max(min(nearest), 0.0) if nearest else None

    async def _due(self, sandbox: LiveSandbox, now: float, wall: datetime) -> float | None:
        """Act if the sandbox's timeout or idle timeout is due; else seconds until one is."""
        info = sandbox.info
        left: list[float] = []
        if info.expires_at is not None and info.state in (
            SandboxState.RUNNING,
            SandboxState.PAUSED,
        ):
            remaining = (info.expires_at - wall).total_seconds()
            if remaining <= 0:
                await self._act(sandbox.id, info.on_timeout, f"timeout_s={info.timeout_s:g}")
                return None
            left.append(remaining)
        if info.idle_timeout_s and info.state is SandboxState.RUNNING:
            since = self.activity.idle_since(sandbox.id)
            if since is None:  # leased: idle at the earliest this long after it lets go
                left.append(info.idle_timeout_s)
            else:
                remaining = since + info.idle_timeout_s - now
                if remaining > 0:
                    left.append(remaining)
                elif await self._processes_running(sandbox):
                    self.activity.touch(sandbox.id)  # busy after all: look again later
                    left.append(info.idle_timeout_s)
                else:
                    idle = f"idle_timeout_s={info.idle_timeout_s:g}"
                    await self._act(sandbox.id, info.on_idle, idle)
                    return None
        return min(left) if left else None

    async def _processes_running(self, sandbox: LiveSandbox) -> bool:
        """Whether a command or process started through the API still runs in the guest."""
        try:
            return any(p.running for p in await sandbox.processes())
        except SietchError:
            return False  # an agent that can't answer has nothing to keep it awake

    async def _act(self, sandbox_id: str, action: TimeoutAction, why: str) -> None:
        try:
            await self.host.timed_out(sandbox_id, action, why)
        except SietchError as exc:
            log.warning("sandbox %s: %s (%s) failed: %s", sandbox_id, action, why, exc)
            self._not_before[sandbox_id] = time.monotonic() + RETRY_S
        except Exception:
            log.exception("sandbox %s: %s (%s) failed", sandbox_id, action, why)
            self._not_before[sandbox_id] = time.monotonic() + RETRY_S

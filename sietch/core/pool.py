"""A warm pool: sandboxes restored from a template before anyone asks for them.

Restoring a template starts QEMU in ~60 ms, but under TCG the guest agent's
first answers take most of a second more (its code is translated afresh in
every new QEMU process). A pooled sandbox has paid that already (a code
interpreter's first cell too, see :mod:`.kernel_gateway`): handing it out is one
``hello`` (fresh clock and entropy, so two sandboxes never share random
state) and a database write. Pooled sandboxes are hidden from
listings, counted against ``max_sandboxes``, and never adopted after a
restart (the next start reaps them).

When creates come faster than the pool refills, a create that finds it empty
waits for the next sandbox the pool makes, and the pool restores one more for
every waiting create, in parallel: at most one per core (and
``restore_concurrency``), because each fill includes the guest's first,
CPU-bound answers. A burst of creates is served by parallel restores that do
not all slow each other down, and never by one restore after another.

A fill that fails (its restore, or its warm-up) fails the create waiting for
it, if any, and is tried again after a pause that doubles with every failure
in a row (:data:`RETRY_S` up to :data:`RETRY_MAX_S`), at most
:data:`ATTEMPTS` times: a template that cannot be restored costs a few
tries, not a loop of restores. The next create starts the pool again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from datetime import UTC, datetime

from sietch.core import kernel_gateway
from sietch.core.host import SandboxHost
from sietch.core.images import TOOLS_BUSYBOX
from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxInfo, SandboxSpec
from sietch.core.provision import fixup
from sietch.errors import NotFound, SietchError

log = logging.getLogger(__name__)

POOL_LABEL = "sietch.pool"
"""Metadata key marking a pooled sandbox; its value is the template key."""


WARM_UP = ["/bin/sh", "-c", "true && exec true"]
"""A fill's first exec runs the image's own shell and ``true``: TCG translates the guest's
code afresh in every new QEMU, and the image's ld.so and libc (which the agent, on the tools
disk's own, never runs) cost a create's first exec ~100 ms otherwise."""

DESKTOP_WARM_UP_S = 600.0
"""How long a pooled desktop sandbox's first frame may take: under emulation on a loaded
host (load 6-15 on 2 cores) a restored guest's VNC handshake took more than 30 s."""
REFILL_DELAY_S = 0.25
"""How long after a hand-out the pool starts its own refill. A refill's restore and warm-up
take a core for most of a second, and the new owner's first commands come right after the
create: sharing the host with the refill they took 2-3x as long (first exec 46 vs 18 ms at
load 6 on 2 cores). A create that finds the pool empty still has its fill start at once."""
RETRY_S = 5.0
RETRY_MAX_S = 120.0
ATTEMPTS = 5


def is_pooled(info: SandboxInfo) -> bool:
    return POOL_LABEL in info.labels


class WarmPool:
    """Keeps up to ``size`` ready sandboxes per template, and one more per waiting create."""

    def __init__(self, host: SandboxHost, size: int, parallel: int) -> None:
        self.host = host
        self.size = size
        self._ready: dict[str, list[str]] = defaultdict(list)
        self._filling: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, deque[asyncio.Future[str]]] = defaultdict(deque)
        self._slots = asyncio.Semaphore(parallel)
        """Restores of the pool at once."""

    def ready(self) -> set[str]:
        """Ids of the pooled sandboxes ready to be handed out."""
        return {i for ids in self._ready.values() for i in ids}

    async def take(self, key: str, spec: SandboxSpec, template_id: str) -> SandboxInfo | None:
        """A pooled sandbox made the caller's, waiting for the next one when none is ready;
        None when the pool is off (size 0). Refills the pool either way: at once while other
        creates wait (a burst), else :data:`REFILL_DELAY_S` later."""
        taken = await self._take(key, spec, template_id)
        if self._waiting[key]:
            self.refill(key, template_id)
        elif self.size > 0:
            self.host.spawn(self._refill_later(key, template_id))
        return taken

    async def _refill_later(self, key: str, template_id: str) -> None:
        """Top the pool up once the sandbox just handed out has had its first answers (see
        :data:`REFILL_DELAY_S`)."""
        await asyncio.sleep(REFILL_DELAY_S)
        self.refill(key, template_id)

    async def _take(self, key: str, spec: SandboxSpec, template_id: str) -> SandboxInfo | None:
        while self.size > 0:
            sandbox = self.host.live(await self._next(key, template_id))
            if sandbox is None:
                continue
            try:
                await sandbox.agent.call("hello", time=time.time(), **fixup())
            except SietchError:
                sandbox.log.warning("pooled sandbox did not answer; discarding it")
                await self.host.destroy(sandbox.id)
                continue
            info = sandbox.info
            info.labels, info.env = dict(spec.labels), dict(spec.env)
            info.tenant = spec.tenant
            info.created_at = datetime.now(UTC)
            self.host.set_timeouts(info, spec)
            self.host.store.put(info)
            return info.model_copy()
        return None

    async def _next(self, key: str, template_id: str) -> str:
        """The id of a ready sandbox: one in the pool, else the next one a refill makes."""
        if self._ready[key]:
            return self._ready[key].pop(0)
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[key].append(waiter)
        try:
            self.refill(key, template_id)
            return await waiter
        finally:
            if waiter in self._waiting[key]:
                self._waiting[key].remove(waiter)

    def refill(self, key: str, template_id: str) -> None:
        """Start restores in the background until the pool for ``key`` is full and every
        waiting create has one coming."""
        if self.size <= 0:
            return
        wanted = self.size + len(self._waiting[key])
        for _ in range(max(wanted - len(self._ready[key]) - self._filling[key], 0)):
            self._filling[key] += 1
            self.host.spawn(self._add(key, template_id))

    async def _add(self, key: str, template_id: str) -> None:
        """One fill, tried again after failures (see the module); counted as filling
        throughout, so that the pauses hold off refills of the pool's own."""
        try:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    async with self._slots:
                        sandbox_id = await self._restore(key, template_id)
                except SietchError as exc:
                    pause = min(RETRY_S * 2 ** (attempt - 1), RETRY_MAX_S)
                    last = attempt == ATTEMPTS
                    log.warning(
                        "could not add a sandbox to the warm pool (try %d of %d%s): %s",
                        *(attempt, ATTEMPTS, "" if last else f", again in {pause:g}s", exc),
                    )
                    if waiter := self._first_waiter(key):
                        waiter.set_exception(exc)  # that create fails as its own restore would
                    if not last:
                        await asyncio.sleep(pause)
                    continue
                if waiter := self._first_waiter(key):
                    waiter.set_result(sandbox_id)
                else:
                    self._ready[key].append(sandbox_id)
                return
        finally:
            self._filling[key] -= 1

    async def _restore(self, key: str, template_id: str) -> str:
        info = await self.host.restore(template_id, labels={POOL_LABEL: key})
        sandbox = self.host.live(info.id)
        if sandbox is None:
            raise SietchError(f"pooled sandbox {info.id} ended before it was ready")
        try:
            await _warm_up(sandbox)
            if info.desktop is not None:  # and the first, full frame of its screen
                await self.host.desktops.warm_up(sandbox, DESKTOP_WARM_UP_S)
            elif await kernel_gateway.present(sandbox):  # and the first cell of its kernel
                await kernel_gateway.warm(sandbox)
        except SietchError:
            await self.host.destroy(info.id)
            raise
        return info.id

    def _first_waiter(self, key: str) -> asyncio.Future[str] | None:
        waiting = self._waiting[key]
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                return waiter
        return None


async def _warm_up(sandbox: LiveSandbox) -> None:
    """Pay the first, slow answers now (see :data:`WARM_UP`); with the tools' busybox in an
    image without a shell (an imported one)."""
    try:
        await sandbox.exec(WARM_UP)
    except NotFound:
        await sandbox.exec([TOOLS_BUSYBOX, "true"])

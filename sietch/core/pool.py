"""A warm pool: sandboxes restored from a template before anyone asks for them.

Restoring a template starts QEMU in ~60 ms, but under TCG the guest agent's
first answers take most of a second more (its code is translated afresh in
every new QEMU process). A pooled sandbox has paid that already: handing it
out is one ``hello`` (fresh clock and entropy, so two sandboxes never share
random state) and a database write. Pooled sandboxes are hidden from
listings, counted against ``max_sandboxes``, and never adopted after a
restart (the next start reaps them).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

from sietch.core.host import SandboxHost
from sietch.core.models import SandboxInfo, SandboxSpec
from sietch.core.provision import fixup
from sietch.errors import SietchError

log = logging.getLogger(__name__)

POOL_LABEL = "sietch.pool"
"""Metadata key marking a pooled sandbox; its value is the template key."""


def is_pooled(info: SandboxInfo) -> bool:
    return POOL_LABEL in info.labels


class WarmPool:
    """Keeps up to ``size`` ready sandboxes per template."""

    def __init__(self, host: SandboxHost, size: int) -> None:
        self.host = host
        self.size = size
        self._ready: dict[str, list[str]] = defaultdict(list)
        self._filling: dict[str, int] = defaultdict(int)

    def ready(self) -> set[str]:
        """Ids of the pooled sandboxes ready to be handed out."""
        return {i for ids in self._ready.values() for i in ids}

    async def take(self, key: str, spec: SandboxSpec) -> SandboxInfo | None:
        """A pooled sandbox made the caller's, or None when none is ready."""
        while self._ready[key]:
            sandbox = self.host.live(self._ready[key].pop(0))
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
            info.created_at = datetime.now(UTC)
            self.host.schedule_expiry(info, spec.timeout_s)
            self.host.store.put(info)
            return info.model_copy()
        return None

    def refill(self, key: str, template_id: str) -> None:
        """Start restores in the background until the pool for ``key`` is full."""
        missing = self.size - len(self._ready[key]) - self._filling[key]
        for _ in range(max(missing, 0)):
            self._filling[key] += 1
            self.host.spawn(self._add(key, template_id))

    async def _add(self, key: str, template_id: str) -> None:
        try:
            info = await self.host.restore(template_id, labels={POOL_LABEL: key})
            sandbox = self.host.live(info.id)
            try:
                if sandbox is not None:
                    await sandbox.exec(["true"])  # pay the first, slow answer now
                    self._ready[key].append(info.id)
            except SietchError:
                await self.host.destroy(info.id)
                raise
        except SietchError as exc:
            log.warning("could not add a sandbox to the warm pool: %s", exc)
        finally:
            self._filling[key] -= 1

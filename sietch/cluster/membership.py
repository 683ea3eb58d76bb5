"""Membership: a node registers itself in the catalog, heartbeats its capacity and reports
what it holds; gateways mark the nodes that fell silent unreachable
(:meth:`sietch.cluster.catalog.Catalog.mark_unreachable`).

A node's report is a diff: after every change a request made (create, delete, fork,
pause, ...: :meth:`NodeAgent.sync`) and at every heartbeat (timeouts, crashes), it
writes the sandboxes whose state changed and deletes the ones gone, so the catalog's
writes follow the lifecycle, not the clock. At start it writes everything it holds
(``complete``), which is how a restarted node re-adopts its sandboxes in the catalog.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from sietch.cluster.catalog import Capacity, Catalog
from sietch.config import MiB, Settings
from sietch.core import images as user_images
from sietch.core.hostmem import mem_available
from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo, SnapshotInfo
from sietch.core.pool import is_pooled
from sietch.errors import SietchError
from sietch.vmm.version import version_text

log = logging.getLogger(__name__)
T = TypeVar("T")

Describe = Callable[[SandboxInfo], dict[str, Any]]
"""A sandbox's record as the public API shows it (what a gateway lists for a lost one)."""
DescribeSnapshot = Callable[[SnapshotInfo], dict[str, Any]]
"""A snapshot's, as the public API shows it (what another node's console draws)."""


@dataclass(frozen=True)
class Holdings:
    """What a node holds, as it reports it."""

    sandboxes: dict[str, str]
    """Sandbox id -> the JSON of its public record."""
    snapshots: dict[str, str]
    """Snapshot id -> the JSON of its public record, templates included."""
    images: list[str]
    """Built-in and (ready) user images."""
    owners: dict[str, str]
    """User image -> its tenant."""


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no MemTotal in /proc/meminfo")


class NodeAgent:
    """This node's membership: ``await start()``, then ``run()`` as a task; ``sync()``
    after a change. Every catalog call runs in a thread (psycopg is blocking)."""

    def __init__(
        self,
        catalog: Catalog,
        manager: Manager,
        settings: Settings,
        describe: Describe,
        describe_snapshot: DescribeSnapshot,
    ) -> None:
        self.catalog = catalog
        self.manager = manager
        self.settings = settings
        self.describe = describe
        self.describe_snapshot = describe_snapshot
        self.name = settings.node_name
        self._qemu = version_text(settings.qemu_binary)
        self._last = Holdings({}, {}, [], {})
        """What the last report said."""
        self._lock = asyncio.Lock()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sietch-catalog")
        """The catalog's own thread: in the default pool a heartbeat would wait behind the
        manager's file copies (a few threads on a small machine), and miss its turn."""

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    def close(self) -> None:
        self._thread.shutdown(wait=False)

    def capacity(self) -> Capacity:
        s = self.settings
        disk = os.statvfs(s.state_dir)
        free_memory = mem_available() - s.memory_reserve_mib * MiB
        return Capacity(
            vcpus=os.cpu_count() or 1,
            memory_mib=_mem_total() // MiB,
            disk_mib=disk.f_blocks * disk.f_frsize // MiB,
            max_sandboxes=s.max_sandboxes,
            free_memory_mib=max(free_memory, 0) // MiB,
            free_disk_mib=disk.f_bavail * disk.f_frsize // MiB,
            load=os.getloadavg()[0],
            sandboxes=len(self.manager.live_sandboxes()),
            accelerator=self.manager.accel,
            qemu_version=self._qemu,
        )

    def _holdings(self) -> Holdings:
        store = self.manager.store
        sandboxes = {i.id: json_of(self.describe(i)) for i in store.all() if not is_pooled(i)}
        snapshots = {s.id: json_of(self.describe_snapshot(s)) for s in store.all_snapshots()}
        owners = {i.name: i.tenant for i in user_images.listed(store)}
        images = sorted({i.name for i in self.manager.images.list()} | set(owners))
        return Holdings(sandboxes, snapshots, images, owners)

    async def start(self) -> None:
        """Register (again, after a restart: same name) and report all this node holds."""
        url = self.settings.advertised_node_url
        await self._call(self.catalog.register, self.name, url, self.capacity())
        await self.sync(complete=True)
        log.info("node %s registered in the catalog at %s", self.name, url)

    async def sync(self, *, complete: bool = False) -> None:
        """Write what changed since the last report (everything, with ``complete``)."""
        async with self._lock:
            now = self._holdings()
            changed = {
                i: record
                for i, record in now.sandboxes.items()
                if complete or self._last.sandboxes.get(i) != record
            }
            gone = [i for i in self._last.sandboxes if i not in now.sandboxes]
            if changed or gone or complete:
                await self._call(
                    self.catalog.report,
                    self.name,
                    {i: _loads(r) for i, r in changed.items()},
                    gone,
                    complete=complete,
                )
            if complete or now.snapshots != self._last.snapshots:
                records = {i: _loads(r) for i, r in now.snapshots.items()}
                await self._call(self.catalog.report_snapshots, self.name, records)
            if complete or (now.images, now.owners) != (self._last.images, self._last.owners):
                await self._call(self.catalog.report_images, self.name, now.images, now.owners)
            self._last = now

    async def run(self) -> None:
        """Heartbeat every ``heartbeat_s`` until cancelled; an unreachable catalog is
        logged and retried (the node keeps serving what it holds)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                known = await self._call(self.catalog.heartbeat, self.name, self.capacity())
                if not known:  # removed from the catalog meanwhile: join again
                    await self.start()
                else:
                    await self.sync()
            except SietchError as exc:
                log.warning("heartbeat of node %s failed: %s", self.name, exc)


def json_of(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _loads(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(text)
    return loaded

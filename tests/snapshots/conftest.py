"""Fixtures for snapshot tests: a tracker that deletes restored sandboxes and snapshots."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest_asyncio

from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo, SnapshotInfo
from sietch.errors import SietchError


class Tracker:
    """Records what a test restores, forks and snapshots, and removes it afterwards."""

    def __init__(self, manager: Manager) -> None:
        self.m = manager
        self.sandbox_ids: list[str] = []
        self.snapshot_ids: list[str] = []

    async def create(self, **spec: object) -> LiveSandbox:
        return self._track(await self.m.create(**spec))

    async def snapshot(self, sb: LiveSandbox, name: str | None = None) -> SnapshotInfo:
        snap = await self.m.snapshot(sb.id, name=name)
        self.snapshot_ids.append(snap.id)
        return snap

    async def restore(self, snap: SnapshotInfo, **options: object) -> LiveSandbox:
        return self._track(await self.m.restore(snap.id, **options))

    async def fork(self, sb: LiveSandbox, count: int) -> list[LiveSandbox]:
        infos = await self.m.fork(sb.id, count)
        for info in infos:
            if info.snapshot_id and info.snapshot_id not in self.snapshot_ids:
                self.snapshot_ids.append(info.snapshot_id)
        return [self._track(info) for info in infos]

    def _track(self, info: SandboxInfo) -> LiveSandbox:
        self.sandbox_ids.append(info.id)
        return self.m.sandbox(info.id)

    async def cleanup(self) -> None:
        for sandbox_id in reversed(self.sandbox_ids):
            with contextlib.suppress(SietchError):
                await self.m.delete(sandbox_id)
        for snap_id in reversed(self.snapshot_ids):
            with contextlib.suppress(SietchError):
                await self.m.delete_snapshot(snap_id)


@pytest_asyncio.fixture
async def track(manager: Manager) -> AsyncIterator[Tracker]:
    """Create, snapshot, restore and fork through this; all of it is removed in teardown."""
    tracker = Tracker(manager)
    yield tracker
    await tracker.cleanup()

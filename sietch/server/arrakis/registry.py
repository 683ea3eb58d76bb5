"""Arrakis names VMs and snapshots by the caller's strings; Sietch by generated ids.

The name is kept as a label of the sandbox (and the snapshot), in the
manager's SQLite state: a restarted server still knows every name, and no
second table can drift from the first. Only names whose create is under way
are held here, so two concurrent creates of one name cannot both succeed.

Names are per tenant: a lookup takes the caller's ``scope`` (its tenant; None
for an admin, who finds every tenant's), a reservation the tenant that will own it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.requests import HTTPConnection

from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo, SandboxState, SnapshotInfo
from sietch.errors import Conflict, SandboxNotFound, SnapshotNotFound

VM_LABEL = "arrakis.vm"
"""Label carrying a sandbox's Arrakis ``vmName``; /v1 sees only sandboxes that have it."""
SNAPSHOT_LABEL = "arrakis.snapshot"
"""Label carrying a snapshot's Arrakis ``snapshotId`` (also its Sietch name)."""


class Registry:
    """Finds sandboxes and snapshots by their Arrakis names; reserves names being made."""

    def __init__(self) -> None:
        self._vms: set[tuple[str, str]] = set()
        self._snapshots: set[tuple[str, str]] = set()

    async def vms(self, manager: Manager, scope: str | None) -> list[SandboxInfo]:
        """Every sandbox made through /v1 (sandboxes of Sietch's own API stay out of reach)."""
        return [i for i in await manager.list(tenant=scope) if VM_LABEL in i.labels]

    async def find_vm(self, manager: Manager, name: str, scope: str | None) -> SandboxInfo | None:
        found = await manager.list({VM_LABEL: name}, scope)
        return found[0] if found else None

    async def get_vm(self, manager: Manager, name: str, scope: str | None) -> SandboxInfo:
        info = await self.find_vm(manager, name, scope)
        if info is None:
            raise SandboxNotFound(f"vm not found: {name}")
        return info

    async def find_snapshot(
        self, manager: Manager, snapshot_id: str, scope: str | None
    ) -> SnapshotInfo | None:
        """By Arrakis ``snapshotId`` first, then by Sietch snapshot id."""
        snaps = await manager.list_snapshots(tenant=scope)
        for snap in snaps:
            if snap.labels.get(SNAPSHOT_LABEL) == snapshot_id:
                return snap
        for snap in snaps:
            if snap.id == snapshot_id:
                return snap
        return None

    async def get_snapshot(
        self, manager: Manager, snapshot_id: str, scope: str | None
    ) -> SnapshotInfo:
        snap = await self.find_snapshot(manager, snapshot_id, scope)
        if snap is None:
            raise SnapshotNotFound(f"snapshot with ID {snapshot_id} does not exist")
        return snap

    @contextlib.asynccontextmanager
    async def reserve_vm(self, manager: Manager, name: str, tenant: str) -> AsyncIterator[None]:
        """Hold ``name`` while its VM is made; a dead VM of that name is cleared away first."""
        if (tenant, name) in self._vms:
            raise Conflict(f"a VM named {name!r} is being created")
        self._vms.add((tenant, name))
        try:
            existing = await self.find_vm(manager, name, tenant)
            if existing is not None:
                if existing.state is not SandboxState.DEAD:
                    raise Conflict(f"a VM named {name!r} already exists ({existing.state.value})")
                with contextlib.suppress(SandboxNotFound):
                    await manager.delete(existing.id)
            yield
        finally:
            self._vms.discard((tenant, name))

    @contextlib.asynccontextmanager
    async def reserve_snapshot(
        self, manager: Manager, snapshot_id: str, tenant: str
    ) -> AsyncIterator[None]:
        """Hold ``snapshot_id`` while its snapshot is taken: Arrakis ids are unique."""
        if (tenant, snapshot_id) in self._snapshots:
            raise Conflict(f"snapshot with ID {snapshot_id} is being taken")
        self._snapshots.add((tenant, snapshot_id))
        try:
            if await self.find_snapshot(manager, snapshot_id, tenant) is not None:
                raise Conflict(f"snapshot with ID {snapshot_id} already exists")
            yield
        finally:
            self._snapshots.discard((tenant, snapshot_id))


async def get_registry(conn: HTTPConnection) -> Registry:
    """The app's one registry, made on first use."""
    registry: Registry | None = getattr(conn.app.state, "arrakis", None)
    if registry is None:
        registry = conn.app.state.arrakis = Registry()
    return registry

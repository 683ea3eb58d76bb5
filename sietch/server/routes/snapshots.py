"""Snapshots: pause/resume, snapshot and fork a sandbox; list, get, delete, restore snapshots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from sietch.core.models import SnapshotInfo
from sietch.server.deps import CallerDep, ManagerDep
from sietch.server.routes.sandboxes import to_public
from sietch.server.schemas import (
    ForkCreate,
    RestoreCreate,
    SandboxesPublic,
    SandboxPublic,
    SnapshotCreate,
    SnapshotPublic,
    SnapshotsPublic,
    TimeoutsCreate,
)

sandbox_router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])
router = APIRouter(prefix="/snapshots", tags=["snapshots"])


def snapshot_public(info: SnapshotInfo) -> SnapshotPublic:
    return SnapshotPublic.model_validate(info.model_dump())


@sandbox_router.post("/{sandbox_id}/pause", name="pause", response_model=SandboxPublic)
async def pause_sandbox(sandbox_id: str, manager: ManagerDep) -> SandboxPublic:
    """Stop the sandbox's CPUs; memory and processes stay as they are."""
    return to_public(await manager.pause(sandbox_id))


@sandbox_router.post("/{sandbox_id}/resume", name="resume", response_model=SandboxPublic)
async def resume_sandbox(sandbox_id: str, manager: ManagerDep) -> SandboxPublic:
    """Let a paused sandbox run on, or restore a hibernated one into its own id."""
    return to_public(await manager.resume(sandbox_id))


@sandbox_router.post(
    "/{sandbox_id}/snapshots",
    name="snapshot",
    status_code=status.HTTP_201_CREATED,
    response_model=SnapshotPublic,
)
async def snapshot_sandbox(
    sandbox_id: str, manager: ManagerDep, body: SnapshotCreate | None = None
) -> SnapshotPublic:
    """Save the whole machine (memory, processes, disk); the sandbox keeps running."""
    body = body or SnapshotCreate()
    return snapshot_public(
        await manager.snapshot(sandbox_id, body.name, body.labels, ttl_s=body.ttl_s)
    )


@sandbox_router.post(
    "/{sandbox_id}/fork",
    name="fork",
    status_code=status.HTTP_201_CREATED,
    response_model=SandboxesPublic,
)
async def fork_sandbox(sandbox_id: str, body: ForkCreate, manager: ManagerDep) -> SandboxesPublic:
    """``count`` running copies of the sandbox, restored from one new snapshot of it."""
    infos = await manager.fork(sandbox_id, body.count, body.labels)
    return SandboxesPublic(data=[to_public(i) for i in infos], count=len(infos))


@router.get("", name="list", response_model=SnapshotsPublic)
async def list_snapshots(
    manager: ManagerDep,
    caller: CallerDep,
    templates: Annotated[bool, Query(description="Include image templates.")] = False,
) -> SnapshotsPublic:
    """The tenant's snapshots (an admin: all); ``parent_id`` links them into a tree."""
    snaps = await manager.list_snapshots(templates, caller.scope)
    return SnapshotsPublic(data=[snapshot_public(s) for s in snaps], count=len(snaps))


@router.get("/{snapshot_id}", name="get", response_model=SnapshotPublic)
async def get_snapshot(snapshot_id: str, manager: ManagerDep) -> SnapshotPublic:
    return snapshot_public(await manager.get_snapshot(snapshot_id))


@router.delete("/{snapshot_id}", name="delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_snapshot(
    snapshot_id: str,
    manager: ManagerDep,
    caller: CallerDep,
    subtree: Annotated[
        bool, Query(description="Also every snapshot descended from it (parent_id).")
    ] = False,
) -> Response:
    """Refused with 409 (nothing deleted) while a sandbox or another snapshot still builds
    on it (or, with ``subtree``, on one of those deleted)."""
    await manager.delete_snapshot(snapshot_id, subtree=subtree, tenant=caller.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{snapshot_id}/restore",
    name="restore",
    status_code=status.HTTP_201_CREATED,
    response_model=SandboxPublic,
)
async def restore_snapshot(
    snapshot_id: str, manager: ManagerDep, caller: CallerDep, body: RestoreCreate | None = None
) -> SandboxPublic:
    """A new running sandbox from the snapshot (any number of times, concurrently); it is the
    snapshot's tenant's (restored from a template: the caller's)."""
    body = body or RestoreCreate()
    info = await manager.restore(
        snapshot_id,
        tenant=caller.tenant,
        labels=body.labels,
        env=body.env,
        hostname=body.hostname,
        network=body.network.policy() if body.network else None,
        **body.model_dump(include=set(TimeoutsCreate.model_fields)),
    )
    return to_public(info)

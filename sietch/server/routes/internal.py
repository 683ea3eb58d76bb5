"""A node's routes for other nodes and gateways only (mounted in the node role, behind
:class:`sietch.server.node.InternalPort`'s secret): snapshots and user images copied node
to node (a snapshot with the user image its disk is layered on), and hibernated sandboxes
moved between nodes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sietch.builder.copy import (
    adopt_image,
    image_files,
    lacks_image,
    point_at_local_layers,
    receiving_dir,
)
from sietch.cluster.wire import SECRET_HEADER
from sietch.config import Settings
from sietch.core import transfer
from sietch.core.models import ImageRecord, SandboxInfo, SandboxState, SnapshotInfo
from sietch.errors import BadGateway, Conflict
from sietch.server.deps import ManagerDep, SettingsDep
from sietch.server.routes.sandboxes import to_public
from sietch.server.routes.snapshots import snapshot_public
from sietch.server.schemas import SandboxPublic, SnapshotPublic

router = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


class Fetch(BaseModel):
    source: str
    """The internal URL of a node holding what is to be copied."""


@asynccontextmanager
async def _pulled(settings: Settings, source: str, path: str) -> AsyncIterator[httpx.Response]:
    """A streamed ``GET`` of ``path`` on the node at ``source`` (200, else BadGateway)."""
    secret = settings.cluster_secret.get_secret_value() if settings.cluster_secret else ""
    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
        client.stream("GET", f"{source}{path}", headers={SECRET_HEADER: secret}) as answer,
    ):
        if answer.status_code != 200:
            await answer.aread()
            raise BadGateway(f"node {source} did not hand over {path}: {answer.text[:500]}")
        yield answer


async def _chunks(answer: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in answer.aiter_raw():
        yield chunk


@router.get("/snapshots/{snapshot_id}/export", name="export")
async def export_snapshot(snapshot_id: str, manager: ManagerDep) -> StreamingResponse:
    """The snapshot's files as a tar stream, their SHA-256 sums last."""
    snap = await manager.get_snapshot(snapshot_id)
    stream = transfer.export_snapshot(manager.snapshots, snap)
    return StreamingResponse(stream, media_type="application/x-tar")


@router.post("/snapshots/{snapshot_id}/fetch", name="fetch", response_model=SnapshotPublic)
async def fetch_snapshot(
    snapshot_id: str, body: Fetch, manager: ManagerDep, settings: SettingsDep
) -> SnapshotPublic:
    """Copy the snapshot here from the node at ``source`` (checked file by file)."""
    return snapshot_public(await _import_snapshot(manager, settings, body.source, snapshot_id))


async def _import_snapshot(
    manager: ManagerDep, settings: Settings, source: str, snapshot_id: str
) -> SnapshotInfo:
    """The snapshot, copied here from ``source``. A user image its disk is layered on that
    this node lacks comes first, from the same node (which could restore it, so holds
    it), and the snapshot's layers are pointed at this node's copy."""

    async def with_its_image(tmp: Path) -> None:
        snap = SnapshotInfo.model_validate_json((tmp / "snapshot.json").read_text())
        if await asyncio.to_thread(lacks_image, manager, snap.image):
            await _fetch_image(manager, settings, source, snap.image)
        await asyncio.to_thread(point_at_local_layers, manager, tmp)

    path = f"/internal/snapshots/{snapshot_id}/export"
    async with _pulled(settings, source, path) as answer:
        return await transfer.import_snapshot(
            manager.snapshots, snapshot_id, _chunks(answer), with_its_image
        )


@router.get("/images/{name}/export", name="export-image")
async def export_image(name: str, manager: ManagerDep) -> StreamingResponse:
    """A user image's record and layers as a tar stream, their SHA-256 sums last."""
    files = await asyncio.to_thread(image_files, manager, name)
    return StreamingResponse(
        transfer.export_files(files, f"image {name}"), media_type="application/x-tar"
    )


@router.post("/images/{name}/fetch", name="fetch-image")
async def fetch_image(
    name: str, body: Fetch, manager: ManagerDep, settings: SettingsDep
) -> dict[str, Any]:
    """Copy user image ``name`` here from the node at ``source`` (checked file by file)."""
    record = await _fetch_image(manager, settings, body.source, name)
    return {"name": record.name, "tenant": record.tenant}


async def _fetch_image(
    manager: ManagerDep, settings: Settings, source: str, name: str
) -> ImageRecord:
    tmp = await asyncio.to_thread(receiving_dir, manager)
    try:
        async with _pulled(settings, source, f"/internal/images/{name}/export") as answer:
            await transfer.receive(tmp, _chunks(answer))
        return await asyncio.to_thread(adopt_image, manager, tmp)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _hibernated(manager: ManagerDep, sandbox_id: str) -> SandboxInfo:
    info = manager.store.get(sandbox_id)
    if info is None or info.state is not SandboxState.HIBERNATED or info.snapshot_id is None:
        raise Conflict(f"sandbox {sandbox_id} is not hibernated here: only a hibernated one moves")
    return info


@router.get("/sandboxes/{sandbox_id}/record", name="sandbox-record")
async def sandbox_record(sandbox_id: str, manager: ManagerDep) -> dict[str, Any]:
    """A hibernated sandbox's whole record (what a node taking it over stores)."""
    return _hibernated(manager, sandbox_id).model_dump(mode="json")


@router.post("/sandboxes/{sandbox_id}/move-in", name="move-in", response_model=SandboxPublic)
async def move_in(
    sandbox_id: str, body: Fetch, manager: ManagerDep, settings: SettingsDep
) -> SandboxPublic:
    """Take over a hibernated sandbox from the node at ``source``: its record and its
    hibernation snapshot (checked file by file). It stays hibernated here, under the same
    id, until a resume wakes it."""
    async with _pulled(settings, body.source, f"/internal/sandboxes/{sandbox_id}/record") as got:
        info = SandboxInfo.model_validate_json(await got.aread())
    assert info.snapshot_id is not None
    if manager.store.get_snapshot(info.snapshot_id) is None:
        await _import_snapshot(manager, settings, body.source, info.snapshot_id)
    manager.store.put(info)
    return to_public(info)


@router.post("/sandboxes/{sandbox_id}/move-out", name="move-out")
async def move_out(sandbox_id: str, manager: ManagerDep) -> dict[str, str]:
    """Let a hibernated sandbox go, once another node has taken it over: its record and
    its hibernation snapshot here are deleted."""
    _hibernated(manager, sandbox_id)
    await manager.delete(sandbox_id)
    return {"moved": sandbox_id}

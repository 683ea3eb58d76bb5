"""A node's routes for other nodes and gateways only (mounted in the node role, behind
:class:`sietch.server.node.InternalPort`'s secret): snapshots copied node to node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sietch.cluster.wire import SECRET_HEADER
from sietch.core import transfer
from sietch.errors import BadGateway
from sietch.server.deps import ManagerDep, SettingsDep
from sietch.server.routes.snapshots import snapshot_public
from sietch.server.schemas import SnapshotPublic

router = APIRouter(prefix="/internal", tags=["internal"], include_in_schema=False)


class Fetch(BaseModel):
    source: str
    """The internal URL of a node holding the snapshot."""


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
    secret = settings.cluster_secret.get_secret_value() if settings.cluster_secret else ""
    url = f"{body.source}/internal/snapshots/{snapshot_id}/export"
    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
        client.stream("GET", url, headers={SECRET_HEADER: secret}) as answer,
    ):
        if answer.status_code != 200:
            await answer.aread()
            raise BadGateway(f"node {body.source} did not hand over {snapshot_id}: {answer.text}")

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in answer.aiter_raw():
                yield chunk

        snap = await transfer.import_snapshot(manager.snapshots, snapshot_id, chunks())
    return snapshot_public(snap)

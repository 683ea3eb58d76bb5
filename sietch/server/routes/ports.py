"""Ports: expose a guest TCP port on the host's loopback, list them, unexpose one.

An exposed port is also reachable through the API's own address: see
:mod:`sietch.server.routes.proxy`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from sietch.core.models import PortMapping
from sietch.server.deps import ManagerDep
from sietch.server.schemas import PortCreate, PortPublic, PortsPublic

router = APIRouter(prefix="/sandboxes", tags=["ports"])

GuestPort = Annotated[int, Path(description="The guest TCP port, 1 to 65535.")]


def port_public(mapping: PortMapping) -> PortPublic:
    return PortPublic.model_validate(mapping.model_dump())


@router.post(
    "/{sandbox_id}/ports",
    name="expose",
    status_code=status.HTTP_201_CREATED,
    response_model=PortPublic,
)
async def expose_port(sandbox_id: str, body: PortCreate, manager: ManagerDep) -> PortPublic:
    """Reach a guest TCP port on 127.0.0.1:host_port; exposing it again returns the same."""
    return port_public(await manager.expose(sandbox_id, body.port))


@router.get("/{sandbox_id}/ports", name="list", response_model=PortsPublic)
async def list_ports(sandbox_id: str, manager: ManagerDep) -> PortsPublic:
    """The sandbox's exposed ports."""
    mappings = await manager.ports(sandbox_id)
    return PortsPublic(data=[port_public(m) for m in mappings], count=len(mappings))


@router.delete(
    "/{sandbox_id}/ports/{port}", name="unexpose", status_code=status.HTTP_204_NO_CONTENT
)
async def unexpose_port(sandbox_id: str, port: GuestPort, manager: ManagerDep) -> Response:
    """Close the port's host address (404 if it was not exposed)."""
    await manager.unexpose(sandbox_id, port)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""Sandboxes: create, list, get, delete, network policy, console log."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import PlainTextResponse

from sietch.core.models import SandboxInfo, SandboxSpec
from sietch.errors import InvalidArgument
from sietch.server.deps import CallerDep, ManagerDep, MetricsDep, StateDep
from sietch.server.schemas import NetworkSet, SandboxCreate, SandboxesPublic, SandboxPublic

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])


def to_public(info: SandboxInfo) -> SandboxPublic:
    return SandboxPublic.model_validate(info.model_dump(exclude={"pid"}))


def parse_labels(labels: list[str]) -> dict[str, str]:
    parsed = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"a label filter is key=value, not {item!r}")
        parsed[key] = value
    return parsed


@router.post("", name="create", status_code=status.HTTP_201_CREATED, response_model=SandboxPublic)
async def create_sandbox(
    body: SandboxCreate,
    manager: ManagerDep,
    state: StateDep,
    metrics: MetricsDep,
    caller: CallerDep,
) -> SandboxPublic:
    """Boot a new sandbox, the caller's tenant's; returns once its agent answers."""
    state.admit_create()
    started = time.perf_counter()
    spec = SandboxSpec(**body.model_dump(exclude={"network", "prefer_node"}), tenant=caller.tenant)
    spec.network = body.network.policy() if body.network else None
    info = await manager.create(spec)
    metrics.create_seconds.observe(time.perf_counter() - started)
    return to_public(info)


@router.get("", name="list", response_model=SandboxesPublic)
async def list_sandboxes(
    manager: ManagerDep,
    caller: CallerDep,
    label: Annotated[
        list[str] | None, Query(description="key=value; repeat to require several.")
    ] = None,
) -> SandboxesPublic:
    """The tenant's sandboxes (dead ones too; an admin: every tenant's), optionally only
    those carrying all given labels."""
    infos = await manager.list(parse_labels(label or []), caller.scope)
    return SandboxesPublic(data=[to_public(i) for i in infos], count=len(infos))


@router.get("/{sandbox_id}", name="get", response_model=SandboxPublic)
async def get_sandbox(sandbox_id: str, manager: ManagerDep) -> SandboxPublic:
    """One sandbox's record."""
    return to_public(await manager.get(sandbox_id))


@router.put("/{sandbox_id}/network", name="set_network", response_model=SandboxPublic)
async def set_network(sandbox_id: str, body: NetworkSet, manager: ManagerDep) -> SandboxPublic:
    """Replace the egress policy of a running sandbox; new connections follow it at once."""
    return to_public(await manager.set_network(sandbox_id, body.policy()))


@router.delete("/{sandbox_id}", name="delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_sandbox(sandbox_id: str, manager: ManagerDep) -> Response:
    """Stop the sandbox's VM and remove its disk and record."""
    await manager.delete(sandbox_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{sandbox_id}/logs", name="logs", response_class=PlainTextResponse)
async def console_logs(
    sandbox_id: str,
    manager: ManagerDep,
    limit: Annotated[int, Query(ge=1, le=16 * 1024 * 1024)] = 256 * 1024,
) -> PlainTextResponse:
    """The tail of the guest's serial console (also of a dead sandbox, to see why)."""
    return PlainTextResponse(manager.console_log(sandbox_id, limit))

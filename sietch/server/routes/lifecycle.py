"""Hibernation and timeouts of a sandbox (see :mod:`sietch.core.lifecycle`)."""

from __future__ import annotations

from fastapi import APIRouter

from sietch.server.deps import ManagerDep
from sietch.server.routes.sandboxes import to_public
from sietch.server.schemas import SandboxPublic, TimeoutSet

router = APIRouter(prefix="/sandboxes", tags=["sandboxes"])


@router.post("/{sandbox_id}/hibernate", name="hibernate", response_model=SandboxPublic)
async def hibernate_sandbox(sandbox_id: str, manager: ManagerDep) -> SandboxPublic:
    """Save the sandbox to disk (memory, processes, disk) and end its VM; ``resume`` (or any
    request, with ``auto_resume``) brings it back under the same id."""
    return to_public(await manager.hibernate(sandbox_id))


@router.post("/{sandbox_id}/timeout", name="set_timeout", response_model=SandboxPublic)
async def set_timeout(sandbox_id: str, body: TimeoutSet, manager: ManagerDep) -> SandboxPublic:
    """Change the sandbox's timeouts; a ``timeout_s`` counts from now."""
    return to_public(await manager.set_timeout(sandbox_id, **body.changes()))

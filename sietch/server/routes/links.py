"""Browser links of a sandbox (desktop viewer, IDE): revoke them, and the sessions they opened."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from sietch.server.deps import ManagerDep, StateDep

router = APIRouter(prefix="/sandboxes", tags=["links"])


class LinksRevoked(BaseModel):
    revoked: int
    """How many links were still valid."""


@router.delete("/{sandbox_id}/links", name="revoke", response_model=LinksRevoked)
async def revoke_links(
    sandbox_id: str,
    manager: ManagerDep,
    state: StateDep,
    purpose: Annotated[
        Literal["desktop", "ide"] | None, Query(description="Only these links (default: all).")
    ] = None,
) -> LinksRevoked:
    """End the sandbox's browser links at once; browsers using them get 401 from now on."""
    await manager.get(sandbox_id)  # 404 for an unknown sandbox
    return LinksRevoked(revoked=state.browser_tokens.revoke(sandbox_id, purpose))

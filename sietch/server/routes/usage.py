"""Per-sandbox metrics: what a sandbox uses on the host and in the guest, with history."""

from __future__ import annotations

from fastapi import APIRouter

from sietch.core.usage import SandboxMetrics
from sietch.server.deps import ManagerDep

router = APIRouter(prefix="/sandboxes", tags=["metrics"])


@router.get("/{sandbox_id}/metrics", name="get", response_model=SandboxMetrics)
async def sandbox_metrics(sandbox_id: str, manager: ManagerDep) -> SandboxMetrics:
    """CPU, memory (host cgroup and PSS, and the guest's own view), disk, network bytes and
    uptime now, and the host-side samples of the last minutes (409 unless it runs or is
    paused)."""
    return await manager.metrics(sandbox_id)

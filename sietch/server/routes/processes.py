"""Background processes: start, list, signal, wait."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from sietch.errors import CommandTimeout
from sietch.server.deps import SandboxDep
from sietch.server.schemas import (
    ProcessCreate,
    ProcessesPublic,
    ProcessExit,
    ProcessPublic,
    SignalCreate,
)

router = APIRouter(prefix="/sandboxes/{sandbox_id}/processes", tags=["processes"])


@router.post("", name="start", status_code=status.HTTP_201_CREATED, response_model=ProcessPublic)
async def start_process(body: ProcessCreate, sandbox: SandboxDep) -> ProcessPublic:
    """Start a command that keeps running after the request (its output is kept for attach)."""
    pid = await sandbox.start_background(
        body.cmd,
        tag=body.tag,
        env=body.env or None,
        cwd=body.cwd,
        user=body.user,
        timeout=body.timeout,
    )
    for proc in await sandbox.processes():
        if proc.pid == pid:
            return ProcessPublic.model_validate(proc.model_dump())
    return ProcessPublic(pid=pid, running=True, tag=body.tag, background=True)


@router.get("", name="list", response_model=ProcessesPublic)
async def list_processes(sandbox: SandboxDep) -> ProcessesPublic:
    """Processes the agent started (running and recently finished)."""
    procs = [ProcessPublic.model_validate(p.model_dump()) for p in await sandbox.processes()]
    return ProcessesPublic(data=procs, count=len(procs))


@router.post("/{pid}/signal", name="signal", status_code=status.HTTP_204_NO_CONTENT)
async def signal_process(pid: int, body: SignalCreate, sandbox: SandboxDep) -> Response:
    """Send a signal (default SIGTERM) to a process the agent started."""
    await sandbox.signal(pid, body.signal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{pid}/wait", name="wait", response_model=ProcessExit)
async def wait_process(
    pid: int,
    sandbox: SandboxDep,
    timeout: Annotated[float | None, Query(gt=0, le=86400)] = None,
) -> ProcessExit:
    """Wait for a process to end; ``running`` is true if ``timeout`` passed first."""
    try:
        result = await sandbox.wait(pid, timeout)
    except CommandTimeout:
        # The wait timing out is an answer ("still running"), not a failure of the server.
        return ProcessExit(pid=pid, running=True, exit_code=None)
    return ProcessExit(pid=pid, running=False, exit_code=result.exit_code, signal=result.signal)

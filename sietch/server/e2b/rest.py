"""E2B's control plane (``api.e2b.app``) on Sietch's manager: create, list, get, kill,
timeouts, pause (Sietch's hibernation: memory and processes kept) and connect (resume).

Errors are E2B's ``{"code": <status>, "message"}``: :class:`E2bRoute` catches Sietch's
errors before the app's handler would give them Sietch's own shape.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo, SandboxSpec, SandboxState
from sietch.core.tenants import Caller
from sietch.errors import (
    Conflict,
    ImageNotFound,
    InvalidArgument,
    SandboxNotFound,
    SietchError,
    describe_validation,
)
from sietch.network.policy import NetworkPolicy
from sietch.server.deps import ManagerDep, MetricsDep, StateDep, check_path
from sietch.server.e2b.access import access_token, authenticate
from sietch.server.state import ServerState

ENVD_VERSION = "0.5.7"
"""What the SDK checks features against: 0.5.7 enables octet-stream uploads."""
DEFAULT_TEMPLATE = "base"
DEFAULT_TIMEOUT_S = 300
"""E2B's default sandbox lifetime when a create names none."""
CLIENT_ID = "sietch"
MAX_PAGE = 100


def e2b_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status)


class E2bRoute(APIRoute):
    """A route whose errors leave in E2B's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ImageNotFound as exc:  # E2B: an unknown template is a bad request
                return e2b_error(400, exc.message)
            except SietchError as exc:
                request.app.state.sietch.metrics.errors.labels(exc.code).inc()
                return e2b_error(exc.status, exc.message)
            except RequestValidationError as exc:
                return e2b_error(400, describe_validation(list(exc.errors())))

        return route


async def caller(conn: HTTPConnection) -> Caller:
    """The key's caller; a ``{sandbox_id}`` of another tenant is not found."""
    found = authenticate(conn)
    await check_path(conn, found)
    return found


CallerDep = Annotated[Caller, Depends(caller)]
router = APIRouter(tags=["e2b"], route_class=E2bRoute, dependencies=[Depends(caller)])


class NewSandbox(BaseModel):
    """E2B's ``NewSandbox`` (v1 and v2); fields Sietch has no use for are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    template_id: str = Field(DEFAULT_TEMPLATE, alias="templateID")
    timeout: int | None = Field(None, ge=1)
    auto_pause: bool = Field(False, alias="autoPause")
    auto_resume: dict[str, Any] | None = Field(None, alias="autoResume")
    allow_internet_access: bool | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    env_vars: dict[str, str] = Field(default_factory=dict, alias="envVars")


class TimeoutBody(BaseModel):
    timeout: int = Field(ge=0)


class ConnectBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    timeout: int | None = Field(None, ge=1)


class RefreshBody(BaseModel):
    duration: int = Field(DEFAULT_TIMEOUT_S, ge=1)


def template_of(info: SandboxInfo, default_image: str) -> str:
    return DEFAULT_TEMPLATE if info.image == default_image else info.image


def _state(info: SandboxInfo) -> str:
    return "running" if info.state is SandboxState.RUNNING else "paused"


def _visible(info: SandboxInfo) -> bool:
    """E2B knows running and paused sandboxes; a dead or half-made one is gone."""
    return info.state not in (SandboxState.DEAD, SandboxState.CREATING)


def created(info: SandboxInfo, state: ServerState, request: Request) -> dict[str, Any]:
    """E2B's ``Sandbox``: enough for the SDK to reach envd (through ``E2B_SANDBOX_URL``)."""
    return {
        "templateID": template_of(info, state.settings.default_image),
        "sandboxID": info.id,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": access_token(state, info.id),
        # Without a domain the SDK would address E2B's own cloud.
        "domain": state.settings.proxy_domain or request.url.netloc,
    }


def listed(info: SandboxInfo, state: ServerState) -> dict[str, Any]:
    end = info.expires_at or info.created_at + timedelta(days=365)
    return {
        "templateID": template_of(info, state.settings.default_image),
        "sandboxID": info.id,
        "clientID": CLIENT_ID,
        "startedAt": info.created_at.isoformat(),
        "endAt": end.isoformat(),
        "cpuCount": info.vcpus,
        "memoryMB": info.memory_mib,
        "diskSizeMB": info.disk_mib,
        "state": _state(info),
        "envdVersion": ENVD_VERSION,
        "metadata": info.labels,
    }


async def _visible_info(manager: Manager, sandbox_id: str) -> SandboxInfo:
    info = await manager.get(sandbox_id)
    if not _visible(info):
        raise SandboxNotFound(f"no sandbox with id {sandbox_id!r}")
    return info


@router.post("/sandboxes", name="create", status_code=201)
@router.post("/v2/sandboxes", name="create_v2", status_code=201)
async def create(
    body: NewSandbox,
    request: Request,
    *,
    manager: ManagerDep,
    state: StateDep,
    metrics: MetricsDep,
    caller: CallerDep,
) -> JSONResponse:
    """Create a sandbox of a template (``base``: Sietch's default image); v1 and v2 alike."""
    state.admit_create()
    started = time.perf_counter()
    image = None if body.template_id == DEFAULT_TEMPLATE else body.template_id
    spec = SandboxSpec(
        image=image,
        env=body.env_vars,
        labels=body.metadata,
        timeout_s=body.timeout or DEFAULT_TIMEOUT_S,
        on_timeout="hibernate" if body.auto_pause else "kill",
        tenant=caller.tenant,
    )
    if body.auto_resume is not None:
        spec.auto_resume = bool(body.auto_resume.get("enabled"))
    if body.allow_internet_access is False:
        spec.network = NetworkPolicy(internet=False)
    try:
        info = await manager.create(spec)
    except ImageNotFound:
        raise ImageNotFound(f"unknown template {body.template_id!r}") from None
    metrics.create_seconds.observe(time.perf_counter() - started)
    return JSONResponse(created(info, state, request), status_code=201)


def _metadata_filter(raw: str | None) -> dict[str, str]:
    """The SDK quotes keys and values, then url-encodes the pairs: undo both."""
    if not raw:
        return {}
    return {
        urllib.parse.unquote(k): urllib.parse.unquote(v)
        for k, v in urllib.parse.parse_qsl(raw, keep_blank_values=True)
    }


@router.get("/sandboxes", name="list")
async def list_v1(
    manager: ManagerDep,
    state: StateDep,
    caller: CallerDep,
    metadata: Annotated[str | None, Query()] = None,
) -> list[dict[str, Any]]:
    """The caller's running sandboxes."""
    infos = await manager.list(_metadata_filter(metadata), caller.scope)
    running = [i for i in infos if i.state is SandboxState.RUNNING]
    return [listed(i, state) for i in running]


@router.get("/v2/sandboxes", name="list_v2")
async def list_v2(
    response: Response,
    *,
    manager: ManagerDep,
    state: StateDep,
    caller: CallerDep,
    metadata: Annotated[str | None, Query()] = None,
    states: Annotated[str | None, Query(alias="state")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    next_token: Annotated[str | None, Query(alias="nextToken")] = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
) -> list[dict[str, Any]]:
    """Running and paused sandboxes (``state=running,paused``), by start time, a page at a
    time: the next page's token is in the ``x-next-token`` header."""
    wanted = set((states or "running,paused").split(","))
    infos = [
        i
        for i in await manager.list(_metadata_filter(metadata), caller.scope)
        if _visible(i) and _state(i) in wanted
    ]
    infos.sort(key=lambda i: (i.created_at, i.id), reverse=order == "desc")
    try:
        start = int(next_token) if next_token else 0
    except ValueError:
        raise InvalidArgument(f"invalid nextToken {next_token!r}") from None
    page = infos[start : start + limit]
    if start + limit < len(infos):
        response.headers["x-next-token"] = str(start + limit)
    return [listed(i, state) for i in page]


@router.get("/sandboxes/{sandbox_id}", name="get")
async def get_sandbox(
    sandbox_id: str, request: Request, manager: ManagerDep, state: StateDep
) -> dict[str, Any]:
    """One sandbox (``SandboxDetail``)."""
    info = await _visible_info(manager, sandbox_id)
    return {**listed(info, state), **created(info, state, request)}


@router.delete("/sandboxes/{sandbox_id}", name="kill", status_code=204)
async def kill_sandbox(sandbox_id: str, manager: ManagerDep) -> Response:
    """End the sandbox; 404 (the SDK's ``False``) if there is none."""
    await _visible_info(manager, sandbox_id)
    await manager.delete(sandbox_id)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout", name="set_timeout", status_code=204)
async def set_timeout(sandbox_id: str, body: TimeoutBody, manager: ManagerDep) -> Response:
    """End (or pause, with ``autoPause``) the sandbox this many seconds from now."""
    await _visible_info(manager, sandbox_id)
    await manager.set_timeout(sandbox_id, timeout_s=body.timeout or None)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/refreshes", name="refresh", status_code=204)
async def refresh(sandbox_id: str, body: RefreshBody, manager: ManagerDep) -> Response:
    """Keep the sandbox alive ``duration`` seconds from now."""
    await _visible_info(manager, sandbox_id)
    await manager.set_timeout(sandbox_id, timeout_s=body.duration)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/pause", name="pause", status_code=204)
async def pause(sandbox_id: str, manager: ManagerDep) -> Response:
    """Hibernate: memory, processes and disk saved, the VM ended; 409 if already paused."""
    info = await _visible_info(manager, sandbox_id)
    if info.state is SandboxState.HIBERNATED:
        raise Conflict(f"sandbox {sandbox_id} is already paused")
    await manager.hibernate(sandbox_id)
    return Response(status_code=204)


async def _connect(
    sandbox_id: str, timeout: int | None, request: Request, manager: Manager, state: ServerState
) -> JSONResponse:
    info = await _visible_info(manager, sandbox_id)
    woke = info.state is not SandboxState.RUNNING
    if woke:
        info = await manager.resume(sandbox_id)
    if timeout is not None:
        info = await manager.set_timeout(sandbox_id, timeout_s=timeout)
    return JSONResponse(created(info, state, request), status_code=201 if woke else 200)


@router.post("/sandboxes/{sandbox_id}/connect", name="connect")
async def connect_v1(
    sandbox_id: str, body: ConnectBody, request: Request, manager: ManagerDep, state: StateDep
) -> JSONResponse:
    """Reach a sandbox, resuming it if paused: 201 if it was, 200 if it ran."""
    return await _connect(sandbox_id, body.timeout, request, manager, state)


@router.post("/v2/sandboxes/{sandbox_id}/connect", name="connect_v2")
async def connect_v2(
    sandbox_id: str, body: ConnectBody, request: Request, manager: ManagerDep, state: StateDep
) -> JSONResponse:
    """The SDK's connect."""
    return await _connect(sandbox_id, body.timeout, request, manager, state)


@router.post("/sandboxes/{sandbox_id}/resume", name="resume", status_code=201)
async def resume(
    sandbox_id: str, body: ConnectBody, request: Request, manager: ManagerDep, state: StateDep
) -> JSONResponse:
    """E2B's older resume: 409 unless the sandbox is paused."""
    if (await _visible_info(manager, sandbox_id)).state is SandboxState.RUNNING:
        raise Conflict(f"sandbox {sandbox_id} is not paused")
    return await _connect(sandbox_id, body.timeout, request, manager, state)

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
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo, SandboxSpec, SandboxState, SnapshotInfo
from sietch.core.tenants import Caller
from sietch.errors import (
    Conflict,
    ImageNotFound,
    InvalidArgument,
    SandboxNotFound,
    SietchError,
    SnapshotNotFound,
    describe_validation,
)
from sietch.images.desktop import E2B_IMAGE as DESKTOP_IMAGE
from sietch.network.policy import NetworkPolicy
from sietch.server.deps import ManagerDep, MetricsDep, StateDep, check_path
from sietch.server.e2b.access import access_token, authenticate
from sietch.server.state import ServerState

ENVD_VERSION = "0.5.7"
"""What the SDK checks features against: 0.5.7 enables octet-stream uploads."""
DEFAULT_TEMPLATE = "base"
TEMPLATE_IMAGES: dict[str, str] = {
    "code-interpreter-v1": "code-interpreter",
    "desktop": DESKTOP_IMAGE,
}
"""E2B template ids whose Sietch image has another name: e2b-code-interpreter's default,
and e2b-desktop's (which starts its own X server, so its template is the desktop image
without Sietch's desktop running)."""
DEFAULT_TIMEOUT_S = 300
"""E2B's default sandbox lifetime when a create names none."""
CLIENT_ID = "sietch"
MAX_PAGE = 100
SNAPSHOT_PREFIX = "snap-"
T = TypeVar("T")


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
# Not in Sietch's OpenAPI document: it is E2B's API (its own spec), and the document's fuzz
# test would otherwise kill and fork the sandboxes it aims at through these routes.
router = APIRouter(
    tags=["e2b"], route_class=E2bRoute, dependencies=[Depends(caller)], include_in_schema=False
)


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
    if info.image == default_image:
        return DEFAULT_TEMPLATE
    return next((t for t, image in TEMPLATE_IMAGES.items() if image == info.image), info.image)


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
        # Sent back by the SDK on requests to the sandbox's other ports (the code
        # interpreter's contexts): the port proxy lets it in as the owner's.
        "trafficAccessToken": access_token(state, info.id),
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
    timeouts: dict[str, Any] = {
        "timeout_s": body.timeout or DEFAULT_TIMEOUT_S,
        "on_timeout": "hibernate" if body.auto_pause else "kill",
    }
    if body.auto_resume is not None:
        timeouts["auto_resume"] = bool(body.auto_resume.get("enabled"))
    network = NetworkPolicy(internet=False) if body.allow_internet_access is False else None
    snapshot = await _snapshot_named(manager, body.template_id, caller)
    if snapshot is not None:  # E2B names snapshots as templates
        info = await manager.restore(
            snapshot,
            tenant=caller.tenant,
            labels=body.metadata,
            env=body.env_vars or None,
            network=network,
            **timeouts,
        )
    else:
        template = body.template_id
        image = None if template == DEFAULT_TEMPLATE else TEMPLATE_IMAGES.get(template, template)
        spec = SandboxSpec(
            image=image,
            env=body.env_vars,
            labels=body.metadata,
            network=network,
            tenant=caller.tenant,
            **timeouts,
        )
        try:
            info = await manager.create(spec)
        except ImageNotFound:
            raise ImageNotFound(f"unknown template {body.template_id!r}") from None
    metrics.create_seconds.observe(time.perf_counter() - started)
    return JSONResponse(created(info, state, request), status_code=201)


async def _snapshot_named(manager: Manager, template_id: str, caller: Caller) -> str | None:
    """The id of the caller's snapshot ``template_id`` names, if it names one."""
    if not template_id.startswith(SNAPSHOT_PREFIX):
        return None
    try:
        return (await manager.get_snapshot(template_id, caller.scope)).id
    except SnapshotNotFound:
        return None


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
    return [listed(i, state) for i in _page(response, infos, limit, next_token)]


def _page(response: Response, items: list[T], limit: int, next_token: str | None) -> list[T]:
    """One page; the next one's token (an offset) in ``x-next-token`` if there is one."""
    try:
        start = int(next_token) if next_token else 0
    except ValueError:
        raise InvalidArgument(f"invalid nextToken {next_token!r}") from None
    if start < 0:
        raise InvalidArgument(f"invalid nextToken {next_token!r}")
    if start + limit < len(items):
        response.headers["x-next-token"] = str(start + limit)
    return items[start : start + limit]


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


class NetworkUpdate(BaseModel):
    """E2B's egress update: ``denyOut: ["0.0.0.0/0"]`` closes the internet, ``allowOut``
    opens addresses and domains through it (Sietch's ``internet`` and ``allow``)."""

    model_config = ConfigDict(extra="ignore")
    allow_out: list[str] = Field(default_factory=list, alias="allowOut")
    deny_out: list[str] = Field(default_factory=list, alias="denyOut")
    allow_internet_access: bool | None = None


ALL_TRAFFIC = "0.0.0.0/0"


@router.put("/sandboxes/{sandbox_id}/network", name="update_network", status_code=204)
async def update_network(sandbox_id: str, body: NetworkUpdate, manager: ManagerDep) -> Response:
    """Replace the sandbox's egress policy; new connections follow it at once."""
    others = [d for d in body.deny_out if d != ALL_TRAFFIC]
    if others:
        raise InvalidArgument(
            f"denyOut may only be {ALL_TRAFFIC!r} (all traffic) here, not {others[0]!r}: "
            "Sietch's policy is the internet on or off, plus addresses allowed"
        )
    internet = ALL_TRAFFIC not in body.deny_out and body.allow_internet_access is not False
    await _visible_info(manager, sandbox_id)
    await manager.set_network(sandbox_id, NetworkPolicy(internet=internet, allow=body.allow_out))
    return Response(status_code=204)


@router.get("/sandboxes/{sandbox_id}/metrics", name="metrics")
async def sandbox_metrics(sandbox_id: str, manager: ManagerDep) -> list[dict[str, Any]]:
    """E2B's metric samples from Sietch's host-side history (newest last)."""
    info = await _visible_info(manager, sandbox_id)
    if info.state is not SandboxState.RUNNING:
        return []
    report = await manager.metrics(sandbox_id)
    return [
        {
            "timestamp": sample.at.isoformat(),
            "timestampUnix": int(sample.at.timestamp()),
            "cpuCount": info.vcpus,
            "cpuUsedPct": (sample.cpu_percent or 0.0) / info.vcpus,
            "memUsed": sample.memory_bytes or 0,
            "memTotal": sample.memory_limit_bytes or info.memory_mib << 20,
            "memCache": 0,
            "diskUsed": sample.disk_bytes or 0,
            "diskTotal": info.disk_mib << 20,
        }
        for sample in [*report.history, report.current]
    ]


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(None, max_length=200)


def _snapshot(snap: SnapshotInfo) -> dict[str, Any]:
    return {"snapshotID": snap.id, "names": [snap.name] if snap.name else []}


@router.post("/sandboxes/{sandbox_id}/snapshots", name="snapshot", status_code=201)
async def create_snapshot(sandbox_id: str, body: SnapshotBody, manager: ManagerDep) -> JSONResponse:
    """Save the running sandbox (memory, processes, disk); it runs on. Create from it by
    passing the snapshot id as the template."""
    await _visible_info(manager, sandbox_id)
    snap = await manager.snapshot(sandbox_id, body.name)
    return JSONResponse(_snapshot(snap), status_code=201)


@router.get("/snapshots", name="list_snapshots")
async def list_snapshots(
    response: Response,
    *,
    manager: ManagerDep,
    caller: CallerDep,
    sandbox_id: Annotated[str | None, Query(alias="sandboxID")] = None,
    name: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    next_token: Annotated[str | None, Query(alias="nextToken")] = None,
) -> list[dict[str, Any]]:
    """The caller's snapshots, newest first, optionally of one sandbox or by name or id."""
    snaps = [
        s
        for s in await manager.list_snapshots(tenant=caller.scope)
        if (sandbox_id is None or s.sandbox_id == sandbox_id)
        and (name is None or name in (s.id, s.name))
    ]
    snaps.sort(key=lambda s: (s.created_at, s.id), reverse=True)
    return [_snapshot(s) for s in _page(response, snaps, limit, next_token)]


@router.delete("/templates/{snapshot_id}", name="delete_snapshot", status_code=204)
async def delete_snapshot(snapshot_id: str, manager: ManagerDep, caller: CallerDep) -> Response:
    """Delete a snapshot (E2B deletes snapshots as templates); 404 if there is none."""
    await manager.delete_snapshot(snapshot_id, tenant=caller.scope)
    return Response(status_code=204)


class ForkBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    timeout: int | None = Field(None, ge=1)
    count: int = Field(1, ge=1)


@router.post("/sandboxes/{sandbox_id}/fork", name="fork", status_code=201)
async def fork(
    sandbox_id: str, body: ForkBody, request: Request, manager: ManagerDep, state: StateDep
) -> JSONResponse:
    """``count`` running copies of the sandbox, from one new snapshot of it."""
    source = await _visible_info(manager, sandbox_id)
    copies = await manager.fork(sandbox_id, body.count)
    timeout = body.timeout or source.timeout_s or DEFAULT_TIMEOUT_S
    results = []
    for copy in copies:
        timed = await manager.set_timeout(copy.id, timeout_s=timeout)
        results.append({"sandbox": created(timed, state, request)})
    return JSONResponse(results, status_code=201)

"""FastAPI dependencies, as ``Annotated`` aliases the routes declare.

They are ``async def`` although none awaits: FastAPI runs plain ``def``
dependencies in a thread pool, a hop that cost more than the request's own work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Query, Request
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from sietch.config import Settings
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.tenants import Caller
from sietch.errors import InvalidArgument, PermissionDenied, Unavailable
from sietch.server.auth import bearer_key, resolve
from sietch.server.metrics import Metrics
from sietch.server.schemas import MAX_PATH, check_guest_path
from sietch.server.state import ServerState


async def get_state(conn: HTTPConnection) -> ServerState:
    state: ServerState = conn.app.state.sietch
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


def require_manager(state: ServerState) -> Manager:
    if state.manager is None:
        raise Unavailable("the server is starting or stopping")
    return state.manager


async def get_manager(state: StateDep) -> Manager:
    return require_manager(state)


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_metrics(state: StateDep) -> Metrics:
    return state.metrics


ManagerDep = Annotated[Manager, Depends(get_manager)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


class BearerAuth(HTTPBearer):
    """``Authorization: Bearer <key>``; declared as HTTPBearer so /docs offers it."""

    async def __call__(self, conn: HTTPConnection) -> None:  # type: ignore[override]
        await admit(conn)


def authenticate(conn: HTTPConnection) -> Caller:
    """The caller of the connection's key; :class:`AuthenticationError` without a valid one."""
    return resolve(
        conn,
        bearer_key(conn),
        "missing API key: send 'Authorization: Bearer <key>' (SIETCH_API_KEY for the SDK/CLI)",
    )


async def check_path(conn: HTTPConnection, caller: Caller) -> None:
    """Refuse a path naming another tenant's sandbox or snapshot as not found (404, never
    403: that would confirm it exists). Every route with a ``{sandbox_id}`` or
    ``{snapshot_id}`` in its path is checked here, whatever it does."""
    tenant = caller.scope
    if tenant is None:
        return
    params = conn.path_params
    manager = require_manager(conn.app.state.sietch)
    if (sandbox_id := params.get("sandbox_id")) is not None:
        manager.check_tenant(sandbox_id, tenant)
    if (snapshot_id := params.get("snapshot_id")) is not None:
        await manager.get_snapshot(snapshot_id, tenant)


async def admit(conn: HTTPConnection) -> Caller:
    """Authenticate, then check the path's ids against the caller's tenant."""
    caller = authenticate(conn)
    await check_path(conn, caller)
    return caller


require_api_key = BearerAuth(
    auto_error=False,
    description="An API key (`sietch serve` prints the first; `sietch keys create`).",
)


async def get_caller(conn: HTTPConnection) -> Caller:
    """The authenticated caller (the router's :data:`require_api_key` found it first)."""
    return authenticate(conn)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def require_admin(caller: CallerDep) -> None:
    """For what shows every tenant at once (the metrics)."""
    if not caller.admin:
        raise PermissionDenied("this needs an admin key (sietch keys create --admin)")


async def get_sandbox(sandbox_id: str, manager: ManagerDep) -> AsyncIterator[LiveSandbox]:
    """The live sandbox of the path's id (404 unknown, 409 not running), its lock held shared.

    FastAPI leaves a yield dependency after the response is sent, so a streamed
    file download holds the lock until its last byte.
    """
    async with manager.use(sandbox_id) as sandbox:
        yield sandbox


SandboxDep = Annotated[LiveSandbox, Depends(get_sandbox)]


async def guest_path_param(
    request: Request,
    path: Annotated[
        str, Query(min_length=1, max_length=MAX_PATH, description="Path in the guest; no '..'.")
    ],
) -> str:
    """The ``path`` query parameter, refused when it is not valid UTF-8.

    Starlette decodes query strings with errors="replace", which would turn a
    non-UTF-8 name into a different (U+FFFD) one; look at the raw bytes instead.
    """
    raw_query: bytes = request.scope.get("query_string", b"")
    for part in raw_query.split(b"&"):
        key_raw, _, value_raw = part.partition(b"=")
        if key_raw == b"path":
            try:
                unquote_to_bytes(value_raw.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidArgument(
                    "the path is not valid UTF-8; the API names files by UTF-8 paths"
                ) from exc
    return check_guest_path(path)


GuestPathDep = Annotated[str, Depends(guest_path_param)]

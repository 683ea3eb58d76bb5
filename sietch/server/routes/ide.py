"""The IDE: code-server in the sandbox, in the browser, through this server.

``GET /api/v1/sandboxes/{id}/ide`` (API key) hands out a link to
``…/ide/?folder=/home/user&token=…`` (see :mod:`sietch.server.browser_auth`).
Everything under ``…/ide/`` is then code-server's, HTTP and WebSockets,
forwarded to the guest's port through a unix socket of the sandbox (no host
port), with the prefix taken off: code-server uses relative URLs only, so it
works under any path. Its ``--auth none`` is safe because only this route,
behind the IDE cookie, reaches it; the cookie itself is not passed on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel

from sietch.errors import SietchError
from sietch.images import desktop
from sietch.server.browser_auth import BrowserGate, check_ttl
from sietch.server.deps import ManagerDep, StateDep, require_manager
from sietch.server.exec_ws import refuse
from sietch.server.routes.proxy import http_proxy, ws_relay
from sietch.server.routes.proxy.upstream import upstream
from sietch.server.state import ServerState

PURPOSE = "ide"
router = APIRouter(prefix="/sandboxes", tags=["ide"])
"""The API-key route: include it with the API-key dependency."""
browser_router = APIRouter(prefix="/sandboxes", tags=["ide"], include_in_schema=False)
"""code-server's routes, authenticated by the IDE cookie: include without the API key."""
_MARKER = b"/ide/"
_BASE = "//sandbox"
"""Where code-server is, behind the unix socket (the host name is not looked at)."""


def ide_prefix(sandbox_id: str) -> str:
    return f"/api/v1/sandboxes/{sandbox_id}/ide/"


def gate(state: ServerState) -> BrowserGate:
    return BrowserGate(state.browser_tokens, PURPOSE, ide_prefix)


class IdePublic(BaseModel):
    url: str
    """Open in a browser: code-server (VS Code) on the sandbox's files."""
    expires_at: float
    """When the link and the browser session it opens end (seconds since the epoch)."""


@router.get("/{sandbox_id}/ide", name="url", response_model=IdePublic)
async def ide_url(
    sandbox_id: str,
    request: Request,
    *,
    manager: ManagerDep,
    state: StateDep,
    folder: Annotated[str, Query(description="The folder code-server opens.")] = "/home/user",
    ttl: Annotated[
        float | None, Query(description="Seconds the link and its session last (default 3600).")
    ] = None,
) -> IdePublic:
    """A link to code-server in the sandbox, through this server."""
    ttl_s = check_ttl(ttl)
    manager.check_reachable(sandbox_id)  # 404 or 409 now, not in the browser later
    url, grant = gate(state).link(
        str(request.base_url), sandbox_id, ttl_s=ttl_s, query={"folder": folder}
    )
    return IdePublic(url=url, expires_at=grant.expires_at)


@browser_router.api_route(
    "/{sandbox_id}/ide/{path:path}", methods=http_proxy.METHODS, name="proxy", response_model=None
)
async def ide_proxy(sandbox_id: str, path: str, request: Request, state: StateDep) -> Response:
    """code-server's pages and files (a link's first visit trades its token for the cookie)."""
    del path  # the raw path is forwarded
    ide = gate(state)
    if entered := ide.enter(request, sandbox_id):
        return entered
    ide.session(request, sandbox_id)
    manager = require_manager(state)
    socket = await manager.service_socket(sandbox_id, desktop.IDE_PORT)
    url, headers = upstream(request, "http:" + _BASE, marker=_MARKER)
    return await http_proxy.forward(
        request,
        await state.service_client(socket),
        url,
        ide.strip_cookie(headers),
        lease=manager.activity.lease(sandbox_id),
        what=f"the IDE of sandbox {sandbox_id}",
        port=desktop.IDE_PORT,
    )


@browser_router.websocket("/{sandbox_id}/ide/{path:path}", name="proxy_ws")
async def ide_socket(websocket: WebSocket, sandbox_id: str, path: str) -> None:
    """code-server's WebSockets, relayed message by message."""
    del path
    state: ServerState = websocket.app.state.sietch
    ide = gate(state)
    try:
        ide.session(websocket, sandbox_id)
        manager = require_manager(state)
        socket = await manager.service_socket(sandbox_id, desktop.IDE_PORT)
        url, headers = upstream(websocket, "ws:" + _BASE, marker=_MARKER)
        guest = await ws_relay.connect(
            websocket,
            url,
            ide.strip_cookie(headers),
            f"the IDE of sandbox {sandbox_id}",
            desktop.IDE_PORT,
            unix_socket=socket,
        )
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await refuse(websocket, exc)
        return
    try:
        with manager.activity.busy(sandbox_id):  # an open IDE keeps the sandbox awake
            await websocket.accept(subprotocol=guest.subprotocol)
            await ws_relay.relay(websocket, guest)
    finally:
        await guest.close()

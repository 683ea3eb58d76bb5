"""The IDE: code-server in the sandbox, in the browser, through this server.

``GET /api/v1/sandboxes/{id}/ide`` (API key) hands out a link (see
:mod:`sietch.server.browser_auth`). Everything under it is then code-server's,
HTTP and WebSockets, forwarded to the guest's port through a unix socket of
the sandbox (no host port), with the prefix taken off: code-server uses
relative URLs only, so it works under any path. Its ``--auth none`` is safe
because only these routes, behind the IDE cookie, reach it; the cookie itself
is not passed on.

Where the IDE is: code-server's pages run the sandbox's code (its extensions,
its webviews), so they must not share an origin with the web console or the
desktop viewer, whose pages they could then script with the user's sessions.

- With ``SIETCH_PROXY_DOMAIN``: ``http(s)://ide-{id}.{domain}/?folder=…&token=…``,
  a host of its own (:mod:`.proxy.host_routes`), its cookie that host's only
  (no ``Domain``, path ``/``). The API-origin path below then answers 404.
- Without: ``…/api/v1/sandboxes/{id}/ide/?folder=…&token=…`` on the API's
  origin, and the answer says so (``isolated: false``). A ``Content-Security-Policy:
  sandbox`` (an opaque origin, as the console gives guest pages) would contain it,
  but code-server's workbench does not load under one (IndexedDB is denied to an opaque
  origin; measured, see bench/README.md).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from sietch.errors import NotFound, SietchError
from sietch.images import desktop
from sietch.server.browser_auth import BrowserGate, check_ttl
from sietch.server.deps import ManagerDep, StateDep, require_manager
from sietch.server.exec_ws import refuse
from sietch.server.routes.proxy import http_proxy, ws_relay
from sietch.server.routes.proxy.upstream import (
    HOST_ROUTED,
    IDE_HOST,
    IDE_ROUTE,
    IDE_WS_ROUTE,
    upstream,
)
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


UNISOLATED = (
    "the IDE is served on the API's own origin, where the sandbox's code-server pages could "
    "script the web console and the desktop viewer: set SIETCH_PROXY_DOMAIN (a wildcard DNS "
    "name for this server) to give it an origin of its own; until then, open the IDE of a "
    "sandbox you don't trust in a separate browser profile"
)


def ide_host(sandbox_id: str, domain: str) -> str:
    return f"{IDE_HOST}-{sandbox_id}.{domain.strip('.')}"


def gate(state: ServerState, conn: HTTPConnection | None = None) -> BrowserGate:
    """The IDE's links and cookies: on its own host (``conn`` came through one), at that
    host's root; else under :func:`ide_prefix` of the API's origin."""
    if state.settings.proxy_domain and (conn is None or conn.scope.get(HOST_ROUTED)):
        return BrowserGate(state.browser_tokens, PURPOSE, lambda _: "/")
    return BrowserGate(state.browser_tokens, PURPOSE, ide_prefix)


def _where(conn: HTTPConnection, state: ServerState, sandbox_id: str) -> BrowserGate:
    """The gate for a request to the IDE's routes; with a proxy domain, only its host's."""
    domain = state.settings.proxy_domain
    if domain and not conn.scope.get(HOST_ROUTED):
        raise NotFound(f"the IDE of {sandbox_id} is at {ide_host(sandbox_id, domain)}")
    return gate(state, conn)


class IdePublic(BaseModel):
    url: str
    """Open in a browser: code-server (VS Code) on the sandbox's files."""
    expires_at: float
    """When the link and the browser session it opens end (seconds since the epoch)."""
    isolated: bool
    """The IDE has an origin of its own (``SIETCH_PROXY_DOMAIN``): its pages can't reach
    the web console's or the desktop viewer's."""
    warning: str | None = None
    """Why not, when not :attr:`isolated`."""


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
    base, domain = str(request.base_url), state.settings.proxy_domain
    if domain:  # the API's scheme and port, the IDE's own host
        port = f":{request.url.port}" if request.url.port else ""
        base = f"{request.url.scheme}://{ide_host(sandbox_id, domain)}{port}"
    url, grant = gate(state).link(base, sandbox_id, ttl_s=ttl_s, query={"folder": folder})
    warning = None if domain else UNISOLATED
    return IdePublic(url=url, expires_at=grant.expires_at, isolated=bool(domain), warning=warning)


@browser_router.api_route(
    "/{sandbox_id}/ide/{path:path}",
    methods=http_proxy.METHODS,
    name=IDE_ROUTE,
    response_model=None,
)
async def ide_proxy(sandbox_id: str, path: str, request: Request, state: StateDep) -> Response:
    """code-server's pages and files (a link's first visit trades its token for the cookie)."""
    del path  # the raw path is forwarded
    ide = _where(request, state, sandbox_id)
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


@browser_router.websocket("/{sandbox_id}/ide/{path:path}", name=IDE_WS_ROUTE)
async def ide_socket(websocket: WebSocket, sandbox_id: str, path: str) -> None:
    """code-server's WebSockets, relayed message by message."""
    del path
    state: ServerState = websocket.app.state.sietch
    try:
        ide = _where(websocket, state, sandbox_id)
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

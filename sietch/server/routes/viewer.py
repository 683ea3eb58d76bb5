"""The desktop viewer: a link to noVNC in the browser, its page and its WebSocket to VNC.

``GET /api/v1/sandboxes/{id}/desktop`` (API key) hands out a viewer link:
``…/desktop/viewer/?token=…`` (see :mod:`sietch.server.browser_auth`). The
page loads noVNC from this server (``/static/novnc/``, the pinned npm package
the desktop image build installs) and connects to ``…/desktop/viewer/websockify``,
which the server relays to the guest's VNC port through a unix socket of the
sandbox (no host port). A view-only link's relay drops input on the way
(:mod:`sietch.server.rfb_guard`), as noVNC's ``viewOnly`` does in the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel

from sietch.core.manager import Manager
from sietch.errors import NotFound, SietchError, Unavailable
from sietch.images import ImageStore, desktop
from sietch.images.novnc import ENTRY as NOVNC_ENTRY
from sietch.server.browser_auth import BrowserGate, check_ttl
from sietch.server.deps import ManagerDep, SettingsDep, StateDep, require_manager
from sietch.server.exec_ws import refuse
from sietch.server.rfb_guard import ViewOnlyFilter
from sietch.server.routes.proxy import ws_relay
from sietch.server.state import ServerState

PURPOSE = "desktop"
router = APIRouter(prefix="/sandboxes", tags=["desktop"])
"""The API-key route: include it with the API-key dependency."""
browser_router = APIRouter(prefix="/sandboxes", tags=["desktop"], include_in_schema=False)
"""The browser's routes, authenticated by the viewer cookie: include without the API key."""
static_router = APIRouter(prefix="/static", include_in_schema=False)
"""noVNC and the viewer's script: public files, mounted at the app's root."""
_ASSETS = resources.files("sietch.server").joinpath("assets")
_CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'"
)
"""Framed only by this server's own pages (the web console's desktop tab)."""


def viewer_prefix(sandbox_id: str) -> str:
    return f"/api/v1/sandboxes/{sandbox_id}/desktop/viewer/"


def gate(state: ServerState) -> BrowserGate:
    return BrowserGate(state.browser_tokens, PURPOSE, viewer_prefix)


class DesktopViewPublic(BaseModel):
    viewer_url: str
    """Open in a browser: the screen, live; mouse and keyboard unless view-only."""
    vnc_password: str
    """For a VNC client of your own on an exposed port 5900 (``expose(5900)``)."""
    width: int
    height: int
    view_only: bool
    expires_at: float
    """When the link and the browser session it opens end (seconds since the epoch)."""


@router.get("/{sandbox_id}/desktop", name="view", response_model=DesktopViewPublic)
async def desktop_view(
    sandbox_id: str,
    request: Request,
    *,
    manager: ManagerDep,
    state: StateDep,
    view_only: Annotated[bool, Query(description="Watch only: no mouse or keyboard.")] = False,
    ttl: Annotated[
        float | None, Query(description="Seconds the link and its session last (default 3600).")
    ] = None,
) -> DesktopViewPublic:
    """A link that shows the sandbox's desktop in a browser (noVNC through this server)."""
    return desktop_link(state, manager, str(request.base_url), sandbox_id, view_only, ttl)


def desktop_link(  # noqa: PLR0917 - one call site each: the route and the MCP tool
    state: ServerState,
    manager: Manager,
    base: str,
    sandbox_id: str,
    view_only: bool,
    ttl: float | None,
) -> DesktopViewPublic:
    """A viewer link under ``base`` (the server's URL), with the desktop's password and size."""
    ttl_s = check_ttl(ttl)
    screen = manager.desktop(sandbox_id)
    url, grant = gate(state).link(base, sandbox_id, ttl_s=ttl_s, view_only=view_only)
    return DesktopViewPublic(
        viewer_url=url,
        vnc_password=screen.vnc_password,
        width=screen.width,
        height=screen.height,
        view_only=grant.view_only,
        expires_at=grant.expires_at,
    )


@browser_router.get("/{sandbox_id}/desktop/viewer/", name="viewer_page", response_model=None)
async def viewer_page(
    sandbox_id: str, request: Request, state: StateDep, settings: SettingsDep
) -> Response:
    """The viewer page (the link's first visit trades its token for the cookie)."""
    viewer = gate(state)
    if entered := viewer.enter(request, sandbox_id):
        return entered
    grant = viewer.session(request, sandbox_id)
    if not _novnc(settings.cache_dir).is_dir():
        raise Unavailable("noVNC is not installed on this server: run `sietch image build desktop`")
    screen = require_manager(state).desktop(sandbox_id)
    config = {
        "rfb": f"/static/novnc/{NOVNC_ENTRY}",
        "websocket": "websockify",
        "password": screen.vnc_password,
        "view_only": grant.view_only,
    }
    page = Template(_ASSETS.joinpath("viewer.html").read_text()).substitute(
        title=f"Sietch desktop {sandbox_id}",
        # In a <script> element: "</" must not appear, and stays valid JSON as "<\/".
        config=json.dumps(config).replace("</", "<\\/"),
        script="/static/sietch/viewer.js",
    )
    return HTMLResponse(
        page,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": _CSP,
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


@browser_router.websocket("/{sandbox_id}/desktop/viewer/websockify", name="viewer_socket")
async def viewer_socket(websocket: WebSocket, sandbox_id: str) -> None:
    """RFB over a WebSocket, relayed to the guest's VNC port (input dropped if view-only)."""
    state: ServerState = websocket.app.state.sietch
    try:
        grant = gate(state).session(websocket, sandbox_id)
        manager = require_manager(state)
        socket = await manager.service_socket(sandbox_id, desktop.VNC_PORT)
        reader, writer = await _open(socket, sandbox_id)
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await refuse(websocket, exc)
        return
    guest = VncPeer(reader, writer, ViewOnlyFilter() if grant.view_only else None)
    try:
        offered = websocket.scope.get("subprotocols") or []
        with manager.activity.busy(sandbox_id):  # an open viewer keeps the sandbox awake
            await websocket.accept(subprotocol="binary" if "binary" in offered else None)
            await ws_relay.relay(websocket, guest)
    finally:
        await guest.close()


async def _open(socket: Path, sandbox_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(10):
            return await asyncio.open_unix_connection(socket)
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"cannot reach the VNC server of sandbox {sandbox_id}: {exc}") from None


class VncPeer:
    """The guest's VNC port as the relay's peer: bytes each way, the client's filtered."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        guard: ViewOnlyFilter | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._guard = guard
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def send(self, message: bytes | str) -> None:
        if self._writer.is_closing():
            return
        data = message.encode() if isinstance(message, str) else message
        if self._guard is not None:
            try:
                data = self._guard.feed(data)
            except SietchError as exc:
                # Ends the VNC connection: the relay then closes the browser's with this.
                self.close_code, self.close_reason = 1008, exc.message[:120]
                self._writer.close()
                return
        self._writer.write(data)
        await self._writer.drain()

    async def __aiter__(self) -> AsyncIterator[bytes | str]:
        while data := await self._reader.read(256 * 1024):
            yield data
        self.close_code = self.close_code or 1000

    async def close(self, code: int = 1000) -> None:
        del code
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


def _novnc(cache_dir: Path) -> Path:
    return ImageStore(cache_dir).novnc()


@static_router.get("/novnc/{path:path}", name="novnc")
async def novnc_file(path: str, settings: SettingsDep) -> FileResponse:
    """A file of the noVNC library (built with the desktop image)."""
    root = _novnc(settings.cache_dir)
    if not root.is_dir():
        raise Unavailable("noVNC is not installed on this server: run `sietch image build desktop`")
    return _file(root, path)


@static_router.get("/sietch/viewer.js", name="viewer_script")
async def viewer_script() -> FileResponse:
    """The viewer's own script."""
    with resources.as_file(_ASSETS) as assets:
        return _file(Path(assets), "viewer.js")


def _file(root: Path, path: str) -> FileResponse:
    """A file below ``root`` (never outside it), cacheable for a day."""
    base = root.resolve()
    found = (base / path).resolve()
    if not found.is_relative_to(base) or not found.is_file():
        raise NotFound(f"no file {path!r} here")
    media = "text/javascript" if found.suffix == ".js" else None
    return FileResponse(found, media_type=media, headers={"Cache-Control": "public, max-age=86400"})

"""Sandbox traffic without wildcard DNS: the e2b SDK sends every envd request to
``E2B_SANDBOX_URL`` with the sandbox in ``E2b-Sandbox-Id`` and the port in
``E2b-Sandbox-Port``. :class:`SandboxTraffic` re-addresses such a request: envd's port to
``/e2b/envd/{sandbox_id}{path}`` (the routes of :mod:`.envd`), any other port to Sietch's
port proxy, as ``{port}-{id}.{domain}`` hosts are (:mod:`sietch.server.routes.proxy`).
Either way it shares the main port, its access log and its metrics with the rest of the
API.

A request to another port is let in by the sandbox's envd access token (``X-Access-Token``,
or E2B's ``E2B-Traffic-Access-Token``) as its owner's, and the port is exposed on first
use (every port of an E2B sandbox is reachable), but for the ports of the image's own
services (the code interpreter's), which are reached unexposed (:mod:`.services`); without
the token it needs a Sietch API key, as the port proxy always does. The same holds for a
``{port}-{id}.{domain}`` host (``SIETCH_PROXY_DOMAIN``), the form of the SDK's
``get_host`` and e2b-desktop's stream URL.

A signed file URL (``/files?...&signature=``) names no sandbox: the sandbox whose token
signed it is the one it goes to.
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from sietch.core.models import SandboxState
from sietch.core.tenants import Caller
from sietch.errors import InvalidArgument, SietchError
from sietch.server.auth import CALLER
from sietch.server.deps import require_manager
from sietch.server.e2b import services
from sietch.server.e2b.access import FILES_PATH, access_token, signs
from sietch.server.routes.proxy import http_proxy, ws_relay
from sietch.server.routes.proxy.upstream import HOST_ROUTED, HOST_TARGET
from sietch.server.state import ServerState

ENVD_PORT = 49983
"""The port envd listens on in an E2B sandbox, named by the SDK in ``E2b-Sandbox-Port``."""
PREFIX = "/e2b/envd"
TOKEN_HEADERS = (b"x-access-token", b"e2b-traffic-access-token")


class SandboxTraffic:
    """ASGI middleware: requests naming a sandbox go to envd or the port, others pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers", ())) if scope["type"] in ("http", "websocket") else {}
        raw_id = headers.get(b"e2b-sandbox-id")
        if raw_id is None and _signed_file_url(scope):
            found = await _signer(scope)
            if found is None:
                await _refuse(scope, send, 401, "invalid or expired file URL signature")
                return
            raw_id = found.encode()
        if raw_id is None:
            target = scope.get(HOST_TARGET)
            if target is not None and any(h in headers for h in TOKEN_HEADERS):
                # A `{port}-{id}.{domain}` host (SIETCH_PROXY_DOMAIN, already re-addressed to
                # the port proxy) with the sandbox's token, as e2b-desktop's stream URL is used.
                try:
                    await _port_prefix(scope, headers, target[1], target[0], proxied=True)
                except SietchError as exc:
                    await _refuse(scope, send, exc.status, exc.message)
                    return
            await self.app(scope, receive, send)
            return
        sandbox_id = raw_id.decode(errors="replace")
        try:
            port = int(headers.get(b"e2b-sandbox-port", str(ENVD_PORT).encode()))
        except ValueError:
            await _refuse(scope, send, 400, "E2b-Sandbox-Port is not a number")
            return
        if port == ENVD_PORT and scope["type"] == "http":
            if not await _exists(scope, sandbox_id):
                # E2B's proxy words it so: the SDK reads "was not found" as "not running".
                await _refuse(scope, send, 502, f"The sandbox {sandbox_id} was not found")
                return
            prefix = f"{PREFIX}/{quote(sandbox_id, safe='')}"
        else:
            try:
                prefix = await _port_prefix(scope, headers, sandbox_id, port)
            except SietchError as exc:
                await _refuse(scope, send, exc.status, exc.message)
                return
            scope = {**scope, HOST_ROUTED: True}
        raw = scope.get("raw_path") or scope["path"].encode()
        scope = {**scope, "path": prefix + scope["path"], "raw_path": prefix.encode() + raw}
        await self.app(scope, receive, send)


def _signed_file_url(scope: Scope) -> bool:
    """A signed envd file URL (the SDK's ``download_url``/``upload_url``): it names no
    sandbox, as ``E2B_SANDBOX_URL`` serves them all."""
    return (
        scope["type"] == "http"
        and scope["path"] == FILES_PATH
        and b"signature=" in scope.get("query_string", b"")
    )


async def _signer(scope: Scope) -> str | None:
    """The sandbox whose access token signed the URL, if one did: the signature is an
    HMAC-like hash of the token, so trying each sandbox's is cheap and exact."""
    state: ServerState = scope["app"].state.sietch
    conn = HTTPConnection(scope)
    for info in await require_manager(state).list():
        if info.state is not SandboxState.DEAD and signs(conn, access_token(state, info.id)):
            return info.id
    return None


async def _exists(scope: Scope, sandbox_id: str) -> bool:
    """Whether the sandbox is there to answer (running, or asleep and able to wake). A live
    one is, without the database read that every envd request would otherwise make."""
    manager = require_manager(scope["app"].state.sietch)
    if manager.live(sandbox_id) is not None:
        return True
    try:
        info = await manager.get(sandbox_id)
    except SietchError:
        return False
    return info.state is not SandboxState.DEAD


async def _port_prefix(
    scope: Scope, headers: dict[bytes, bytes], sandbox_id: str, port: int, *, proxied: bool = False
) -> str:
    """The path for the port: with the sandbox's token, the request is its owner's, and an
    HTTP request to a service port goes to :mod:`.services` (unless it is ``proxied``
    already: a host the port proxy serves), to any other port to the port proxy, which
    the port is exposed first for."""
    if not 0 < port < 65536:
        raise InvalidArgument(f"port {port} is not a TCP port")
    state: ServerState = scope["app"].state.sietch
    manager = require_manager(state)
    token = next((headers[h] for h in TOKEN_HEADERS if h in headers), None)
    if token is not None and hmac.compare_digest(token, access_token(state, sandbox_id).encode()):
        info = await manager.get(sandbox_id)
        scope[CALLER] = Caller(info.tenant, "e2b-access-token")
        await manager.awake(sandbox_id)
        if port in services.SERVICE_PORTS and scope["type"] == "http" and not proxied:
            return services.prefix(sandbox_id, port)
        await manager.expose(sandbox_id, port)
    name = http_proxy.ROUTE if scope["type"] == "http" else ws_relay.ROUTE
    path: str = scope["app"].url_path_for(name, sandbox_id=sandbox_id, port=port, path="")
    return path.rstrip("/")


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    body = json.dumps({"code": status, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})

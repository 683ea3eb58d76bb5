"""Ports: expose a guest TCP port on the host's loopback, list, unexpose, and proxy HTTP to it.

The proxy lets a user who can reach only the API port (same API key) talk to
a web server in a sandbox: ``/api/v1/sandboxes/{id}/ports/{port}/proxy/{path}``
is forwarded, streamed both ways, to the exposed port's 127.0.0.1 address; a
WebSocket handshake on the same path is relayed message by message. The API
key is not passed on to the guest.

With ``SIETCH_PROXY_DOMAIN`` set, :class:`HostRoutes` also serves
``{port}-{id}.{domain}`` as that proxy for every path, so a web app that uses
absolute paths (``/static/app.js``) works as it would at its own root.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import websockets
from fastapi import APIRouter, Path, Request, Response, WebSocket, status
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection

from sietch.core.models import PortMapping
from sietch.errors import BadGateway, SietchError
from sietch.server.deps import ManagerDep, StateDep, authenticate, require_manager
from sietch.server.exec_ws import _refuse
from sietch.server.schemas import PortCreate, PortPublic, PortsPublic
from sietch.server.state import ServerState

router = APIRouter(prefix="/sandboxes", tags=["ports"])
# WebSockets authenticate inside the handler, so a refusal can carry a JSON body.
ws_router = APIRouter(prefix="/sandboxes", tags=["ports"])

GuestPort = Annotated[int, Path(description="The guest TCP port, 1 to 65535.")]

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the message.
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
_NOT_FORWARDED = _HOP | {b"host", b"authorization"}
# websockets.connect makes its own handshake headers.
_NOT_FORWARDED_WS = _NOT_FORWARDED | {
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"content-length",
}
PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
HOST_ROUTED = "sietch.host_routed"
"""Scope key set by :class:`HostRoutes`: the guest sees the request at its own root."""


def port_public(mapping: PortMapping) -> PortPublic:
    return PortPublic.model_validate(mapping.model_dump())


@router.post(
    "/{sandbox_id}/ports",
    name="expose",
    status_code=status.HTTP_201_CREATED,
    response_model=PortPublic,
)
async def expose_port(sandbox_id: str, body: PortCreate, manager: ManagerDep) -> PortPublic:
    """Reach a guest TCP port on 127.0.0.1:host_port; exposing it again returns the same."""
    return port_public(await manager.expose(sandbox_id, body.port))


@router.get("/{sandbox_id}/ports", name="list", response_model=PortsPublic)
async def list_ports(sandbox_id: str, manager: ManagerDep) -> PortsPublic:
    """The sandbox's exposed ports."""
    mappings = await manager.ports(sandbox_id)
    return PortsPublic(data=[port_public(m) for m in mappings], count=len(mappings))


@router.delete(
    "/{sandbox_id}/ports/{port}", name="unexpose", status_code=status.HTTP_204_NO_CONTENT
)
async def unexpose_port(sandbox_id: str, port: GuestPort, manager: ManagerDep) -> Response:
    """Close the port's host address (404 if it was not exposed)."""
    await manager.unexpose(sandbox_id, port)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.api_route(
    "/{sandbox_id}/ports/{port}/proxy/{path:path}",
    methods=PROXY_METHODS,
    name="proxy",
    response_class=StreamingResponse,
    responses={502: {"description": "Nothing in the sandbox answered on that port."}},
)
async def proxy(
    sandbox_id: str,
    port: GuestPort,
    path: str,
    request: Request,
    *,
    manager: ManagerDep,
    state: StateDep,
) -> StreamingResponse:
    """Forward an HTTP request to an exposed port of the sandbox and stream its answer back."""
    del path  # the raw (still percent-encoded) path is forwarded instead
    mapping = manager.port(sandbox_id, port)
    url, headers = _upstream(request, mapping, "http", _NOT_FORWARDED)
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    client = state.proxy_client()
    upstream = client.build_request(
        request.method, url, headers=headers, content=request.stream() if has_body else None
    )
    try:
        response = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        raise BadGateway(
            f"nothing answered HTTP on port {port} of sandbox {sandbox_id}: "
            f"{type(exc).__name__}: {exc}",
            port=port,
        ) from None

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:  # also when the client went away mid-answer: free the pooled connection
            await response.aclose()

    answer = StreamingResponse(
        body(), status_code=response.status_code, background=BackgroundTask(response.aclose)
    )
    answer.raw_headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP]
    return answer


def _upstream(
    conn: HTTPConnection, mapping: PortMapping, scheme: str, dropped: set[bytes]
) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The exposed port's URL for this request's raw path and query, and the headers to send."""
    raw_path: bytes = conn.scope.get("raw_path") or conn.url.path.encode()
    cut = raw_path.index(b"/proxy/") + len(b"/proxy/")
    tail = raw_path[cut:].decode("ascii", "replace")
    query = conn.scope.get("query_string", b"").decode("ascii", "replace")
    url = f"{scheme}://{mapping.host}:{mapping.host_port}/{tail}" + (f"?{query}" if query else "")
    headers = [(k, v) for k, v in conn.headers.raw if k.lower() not in dropped]
    headers += [
        (b"x-forwarded-for", (conn.client.host if conn.client else "").encode()),
        (b"x-forwarded-proto", conn.url.scheme.encode()),
        (b"x-forwarded-host", conn.headers.get("host", "").encode()),
    ]
    if not conn.scope.get(HOST_ROUTED):
        headers.append((b"x-forwarded-prefix", raw_path[: cut - 1]))
    return url, headers


class HostRoutes:
    """Serve a request for ``{port}-{sandbox id}.{domain}`` as the port proxy, whatever its path.

    Pure ASGI: the request is re-addressed to the proxy route (HTTP or WebSocket)
    and goes through the app as any API request, so the API key, the error
    bodies, the logs and the metrics are the proxy's own. Any other host is left alone.
    """

    def __init__(self, app: ASGIApp, domain: str) -> None:
        self.app = app
        domain = re.escape(domain.strip(".").lower())
        # A trailing dot (a fully qualified name) and the server's own :port may follow.
        self._host = re.compile(rf"(\d{{1,5}})-(sb-[0-9a-z]+)\.{domain}\.?(?::\d+)?", re.ASCII)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (found := self._target(scope)):
            port, sandbox_id = found
            name = "proxy" if scope["type"] == "http" else "proxy_ws"
            # "/api/v1/sandboxes/{id}/ports/{port}/proxy/", from the router: no prefix copied here.
            prefix = scope["app"].url_path_for(name, sandbox_id=sandbox_id, port=port, path="")
            prefix = prefix.rstrip("/")
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            scope = {
                **scope,
                "path": prefix + scope["path"],
                "raw_path": prefix.encode() + raw_path,
                HOST_ROUTED: True,
            }
        await self.app(scope, receive, send)

    def _target(self, scope: Scope) -> tuple[str, str] | None:
        """The guest port and sandbox id the Host header names, if it names one."""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                found = self._host.fullmatch(value.decode("latin-1").lower())
                return (found[1], found[2]) if found else None
        return None


@ws_router.websocket("/{sandbox_id}/ports/{port}/proxy/{path:path}", name="proxy_ws")
async def proxy_socket(websocket: WebSocket, sandbox_id: str, port: int, path: str) -> None:
    """Relay a WebSocket to an exposed port of the sandbox, message by message."""
    del path
    state: ServerState = websocket.app.state.sietch
    try:
        authenticate(websocket)
        mapping = require_manager(state).port(sandbox_id, port)
        url, headers = _upstream(websocket, mapping, "ws", _NOT_FORWARDED_WS)
        protocols = websocket.scope.get("subprotocols") or None
        try:
            upstream = await websockets.connect(
                url,
                additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                subprotocols=protocols,
                max_size=None,
                open_timeout=10,
                ping_interval=None,
                compression=None,
                proxy=None,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            raise BadGateway(
                f"no WebSocket answered on port {port} of sandbox {sandbox_id}: {exc}", port=port
            ) from None
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await _refuse(websocket, exc)
        return
    try:
        await websocket.accept(subprotocol=upstream.subprotocol)
        await _relay(websocket, upstream)
    finally:
        await upstream.close()


async def _relay(websocket: WebSocket, upstream: ClientConnection) -> None:
    async def inbound() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(message.get("code") or 1000)
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def outbound() -> None:
        try:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                else:
                    await websocket.send_text(message)
        except websockets.exceptions.ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        if code in {1005, 1006, 1015}:  # reported, never sent: no status / abnormal / TLS
            code = 1000 if code == 1005 else 1011
        with contextlib.suppress(Exception):
            await websocket.close(code, upstream.close_reason or "")

    tasks = [asyncio.ensure_future(inbound()), asyncio.ensure_future(outbound())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

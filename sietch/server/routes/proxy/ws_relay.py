"""Relay a WebSocket to an exposed guest port, message by message."""

from __future__ import annotations

import asyncio
import contextlib

import websockets
from fastapi import APIRouter, WebSocket
from websockets.asyncio.client import ClientConnection

from sietch.core.models import PortMapping
from sietch.errors import BadGateway, SietchError
from sietch.server.deps import admit, require_manager
from sietch.server.exec_ws import refuse
from sietch.server.routes.proxy.upstream import upstream
from sietch.server.state import ServerState

router = APIRouter(prefix="/sandboxes", tags=["ports"])
"""Include it without the API-key dependency: the handler authenticates itself, so that
a refusal can carry the API's JSON error."""
ROUTE = "proxy_ws"
"""The route's name, for ``url_path_for``."""
# websockets.connect makes its own handshake headers.
_NOT_FORWARDED = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
    }
)
# Close codes that are reported, never sent: no status, abnormal closure, TLS failure.
_NEVER_SENT = {1005, 1006, 1015}


@router.websocket("/{sandbox_id}/ports/{port}/proxy/{path:path}", name=ROUTE)
async def proxy_socket(websocket: WebSocket, sandbox_id: str, port: int, path: str) -> None:
    """Relay a WebSocket to an exposed port of the sandbox, message by message."""
    del path
    state: ServerState = websocket.app.state.sietch
    try:
        await admit(websocket)
        mapping = require_manager(state).port(sandbox_id, port)
        guest = await _connect(websocket, mapping, sandbox_id)
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await refuse(websocket, exc)
        return
    try:
        await websocket.accept(subprotocol=guest.subprotocol)
        await _relay(websocket, guest)
    finally:
        await guest.close()


async def _connect(websocket: WebSocket, mapping: PortMapping, sandbox_id: str) -> ClientConnection:
    """A WebSocket to the exposed port, offered the client's subprotocols (502 if none answers)."""
    url, headers = upstream(websocket, mapping, "ws", dropped=_NOT_FORWARDED)
    try:
        return await websockets.connect(
            url,
            additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            subprotocols=websocket.scope.get("subprotocols") or None,
            max_size=None,
            open_timeout=10,
            ping_interval=None,
            compression=None,
            proxy=None,
        )
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        raise BadGateway(
            f"no WebSocket answered on port {mapping.guest_port} of sandbox {sandbox_id}: {exc}",
            port=mapping.guest_port,
        ) from None


async def _relay(websocket: WebSocket, guest: ClientConnection) -> None:
    """Copy messages both ways until one side closes, then close the other alike."""
    tasks = [
        asyncio.ensure_future(_inbound(websocket, guest)),
        asyncio.ensure_future(_outbound(guest, websocket)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _inbound(websocket: WebSocket, guest: ClientConnection) -> None:
    """Client to guest; the client's close is passed on with its code."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            await guest.close(message.get("code") or 1000)
            return
        if message.get("bytes") is not None:
            await guest.send(message["bytes"])
        elif message.get("text") is not None:
            await guest.send(message["text"])


async def _outbound(guest: ClientConnection, websocket: WebSocket) -> None:
    """Guest to client; the guest's close is passed on with its code and reason."""
    with contextlib.suppress(websockets.exceptions.ConnectionClosed):
        async for message in guest:
            if isinstance(message, bytes):
                await websocket.send_bytes(message)
            else:
                await websocket.send_text(message)
    code = guest.close_code or 1000
    if code in _NEVER_SENT:
        code = 1000 if code == 1005 else 1011
    with contextlib.suppress(Exception):
        await websocket.close(code, guest.close_reason or "")

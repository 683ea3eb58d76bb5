"""Relay a WebSocket to an exposed guest port, message by message.

:func:`connect` and :func:`relay` serve the desktop viewer and the IDE too
(``sietch.server.routes.viewer``): any peer that sends, iterates and closes
like a WebSocket client can be the guest's end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import websockets
from fastapi import APIRouter, WebSocket
from starlette.requests import HTTPConnection
from websockets.asyncio.client import ClientConnection, unix_connect

from sietch.errors import BadGateway, SietchError
from sietch.server.deps import admit, require_manager
from sietch.server.exec_ws import refuse
from sietch.server.routes.proxy.upstream import origin, upstream
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
    """Relay a WebSocket to an exposed port of the sandbox, message by message; the sandbox
    is woken first (``auto_resume``) and counts as busy while the relay is open."""
    del path
    state: ServerState = websocket.app.state.sietch
    try:
        await admit(websocket)
        manager = require_manager(state)
        await manager.awake(sandbox_id)
        mapping = manager.port(sandbox_id, port)
        url, headers = upstream(websocket, origin(mapping, "ws"))
        with manager.activity.busy(sandbox_id):
            guest = await connect(
                websocket, url, headers, f"port {port} of sandbox {sandbox_id}", port
            )
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await refuse(websocket, exc)
        return
    try:
        with manager.activity.busy(sandbox_id):
            await websocket.accept(subprotocol=guest.subprotocol)
            await relay(websocket, guest)
    finally:
        await guest.close()


class Peer(Protocol):
    """The guest's end of a relayed WebSocket: a websockets client, or an adapter."""

    @property
    def close_code(self) -> int | None: ...
    @property
    def close_reason(self) -> str | None: ...
    async def send(self, message: bytes | str) -> None: ...
    def __aiter__(self) -> AsyncIterator[bytes | str]: ...
    async def close(self, code: int = 1000) -> None: ...


async def connect(
    conn: HTTPConnection,
    url: str,
    headers: list[tuple[bytes, bytes]],
    what: str,
    port: int,
    *,
    unix_socket: Path | None = None,
) -> ClientConnection:
    """A WebSocket to ``url`` (through ``unix_socket`` if given), offered the client's
    subprotocols; 502 naming ``what`` if none answers."""
    options: dict[str, Any] = {
        "additional_headers": [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in headers
            if k.lower() not in _NOT_FORWARDED
        ],
        "subprotocols": conn.scope.get("subprotocols") or None,
        "max_size": None,
        "open_timeout": 10,
        "ping_interval": None,
        "compression": None,
    }
    try:
        if unix_socket is not None:
            return await unix_connect(str(unix_socket), url, **options)
        return await websockets.connect(url, proxy=None, **options)
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        raise BadGateway(f"no WebSocket answered on {what}: {exc}", port=port) from None


async def relay(websocket: WebSocket, guest: Peer) -> None:
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


async def _inbound(websocket: WebSocket, guest: Peer) -> None:
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


async def _outbound(guest: Peer, websocket: WebSocket) -> None:
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

"""What a gateway does to requests and answers on their way, apart from choosing the
node (:mod:`.app`): which headers go along, the API key a client sent, the 503 for an
unreachable node, answers copied, listings merged, WebSocket refusals passed on."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

import httpx
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from sietch.cluster.wire import CALLER_HEADER, SCHEME_HEADER, SECRET_HEADER
from sietch.errors import Unavailable
from sietch.server.routes.proxy.upstream import HOP_BY_HOP

NOT_FORWARDED = HOP_BY_HOP | {
    b"authorization",
    b"x-api-key",
    SECRET_HEADER.encode(),
    CALLER_HEADER.encode(),
    SCHEME_HEADER.encode(),
}
WS_NOT_FORWARDED = NOT_FORWARDED | {
    b"host",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"content-length",
}
RESPONSE_NOT_FORWARDED = frozenset(h.decode() for h in HOP_BY_HOP)


def api_key(conn: HTTPConnection) -> str | None:
    """The key a client sent as Sietch (Bearer), Arrakis (Basic password) or E2B
    (``X-API-Key``) does."""
    if key := conn.headers.get("x-api-key"):
        return key
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            return base64.b64decode(value, validate=True).decode().partition(":")[2] or None
    return None


def same_origin(conn: HTTPConnection) -> frozenset[bytes]:
    """What not to forward of a WebSocket's ``Origin``: a node compares it with the host
    the handshake names, and the gateway's handshake to it names the node. So the gateway
    compares it with its own host (as :func:`sietch.server.browser_auth.check_origin`
    does) and drops it when they match; another origin's goes on, and the node refuses
    it as it refuses one sent to it directly."""
    origin = conn.headers.get("origin")
    host = conn.headers.get("host", "")
    if origin is not None and origin.partition("://")[2].rstrip("/").lower() == host.lower():
        return frozenset({b"origin"})
    return frozenset()


def unreachable(node: str, what: str, exc: Exception | str | None = None) -> Unavailable:
    held = f"{what} is on node {node}, which " if what != "it" else f"node {node} "
    why = f": {exc}" if exc is not None else " (it missed its heartbeats)"
    return Unavailable(f"{held}is unreachable{why}", node=node, retry_after=5)


def lower_headers(conn: HTTPConnection) -> dict[str, str]:
    return {k.lower(): v for k, v in conn.headers.items()}


async def buffered(upstream: httpx.Response) -> Response:
    try:
        await upstream.aread()
    finally:
        await upstream.aclose()
    return copy_response(upstream)


def copy_response(answer: httpx.Response) -> Response:
    return Response(
        answer.content,
        status_code=answer.status_code,
        headers={
            k: v
            for k, v in answer.headers.multi_items()
            if k.lower() not in RESPONSE_NOT_FORWARDED | {"content-length", "content-encoding"}
        },
    )


def merge(bodies: list[Any]) -> Any:
    """Lists concatenated; objects merged field by field (lists concatenated, ``count``
    summed, anything else the first node's)."""
    if not bodies:
        return {"data": [], "count": 0}
    if all(isinstance(b, list) for b in bodies):
        return [item for b in bodies for item in b]
    merged: dict[str, Any] = {}
    for body in bodies:
        for key, value in body.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif key == "count" and isinstance(value, int):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, value)
    return merged


async def deny(websocket: WebSocket, status: int, body: bytes) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(
            Response(body, status_code=status, media_type="application/json")
        )
    else:
        message = "refused"
        with contextlib.suppress(ValueError, KeyError, TypeError):
            message = json.loads(body)["error"]["message"]
        await websocket.close(4000 + status, message[:120])

"""Pure ASGI middleware: request log + latency, body size limits, last-resort 500s.

Pure ASGI (not BaseHTTPMiddleware) so streamed uploads and downloads pass
through untouched and WebSockets are not broken.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sietch.config import Settings
from sietch.server.handlers import error_body
from sietch.server.metrics import Metrics

log = logging.getLogger("sietch.server.access")
errors_log = logging.getLogger(__name__)


def _upload(scope: Scope) -> bool:
    return scope["method"] == "PUT" and scope["path"].endswith("/files")


async def _send_json(send: Send, status: int, body: dict[str, Any], request_id: str) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestMiddleware:
    """One log line per request; 413 for oversized bodies; 500 in our shape for bugs."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req-" + secrets.token_hex(6)
        started = time.perf_counter()
        status = 0
        sent = 0
        limit = (
            self.settings.max_upload_bytes if _upload(scope) else self.settings.max_request_bytes
        )

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"the request body exceeds {limit} bytes")
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                what = "SIETCH_MAX_UPLOAD_BYTES" if _upload(scope) else "SIETCH_MAX_REQUEST_BYTES"
                status = 413
                body = error_body(
                    "payload_too_large",
                    f"the request body ({declared} bytes) exceeds the limit of {limit} ({what})",
                )
                await _send_json(send, 413, body, request_id)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            errors_log.exception(
                "unhandled error in %s %s (%s)", scope["method"], scope["path"], request_id
            )
            self.metrics.errors.labels("internal").inc()
            if status == 0:
                status = 500
                body = error_body("internal", f"internal server error (request id {request_id})")
                await _send_json(send, 500, body, request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            self.metrics.request_seconds.labels(scope["method"], route_path, str(status)).observe(
                elapsed
            )
            log.info(
                "%s %s %d %.1fms",
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route_path,
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 2),
                    "bytes_in": received,
                    "bytes_out": sent,
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One line per WebSocket session, when it ends: how long, and how it closed."""
        started = time.perf_counter()
        outcome: dict[str, Any] = {"status": 101}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "websocket.http.response.start":
                outcome["status"] = message["status"]
            elif message["type"] == "websocket.close":
                outcome["close_code"] = message.get("code", 1000)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            log.info(
                "WS %s %d %.1fms",
                scope["path"],
                outcome["status"],
                elapsed * 1000,
                extra={
                    "method": "WS",
                    "path": scope["path"],
                    "latency_ms": round(elapsed * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                    **outcome,
                },
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

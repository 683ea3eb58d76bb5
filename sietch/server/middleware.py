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


_IMAGE_UPLOADS = ("/api/v1/images", "/api/v1/images/import")
"""Build contexts and OCI archives: as big as file uploads may be."""


def _upload(scope: Scope) -> bool:
    if scope["method"] == "POST" and scope["path"].rstrip("/") in _IMAGE_UPLOADS:
        return True
    if scope["method"] == "POST" and scope["path"].startswith("/e2b/envd/"):
        return scope["path"].endswith("/files")  # E2B's envd upload (sietch.server.e2b)
    return scope["method"] == "PUT" and scope["path"].endswith("/files")


class _Exchange:
    """One HTTP request on its way through: its id, what it answered, the bytes each way.

    ``receive`` and ``send`` wrap the server's own, to count the bytes, tag the
    answer with the request id and stop a body that outgrows ``limit``.
    """

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self.request_id = "req-" + secrets.token_hex(6)
        self.started = time.perf_counter()
        self.status = 0
        """The status answered; 0 until the answer has started."""
        self.received = 0
        self.sent = 0
        self._receive = receive
        self._send = send
        self._limit = limit

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limit:
                raise HTTPException(413, f"the request body exceeds {self._limit} bytes")
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message.setdefault("headers", [])
            message["headers"] = [*message["headers"], (b"x-request-id", self.request_id.encode())]
        elif message["type"] == "http.response.body":
            self.sent += len(message.get("body", b""))
        await self._send(message)

    async def answer(self, status: int, code: str, message: str) -> None:
        """Answer with the API's JSON error ourselves, the app never having answered."""
        self.status = status
        payload = json.dumps(error_body(code, message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", self.request_id.encode()),
        ]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": payload})


class RequestMiddleware:
    """One log line per request; 413 for oversized bodies; 500 in our shape for bugs."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = _upload(scope)
        limit = self.settings.max_upload_bytes if upload else self.settings.max_request_bytes
        exchange = _Exchange(receive, send, limit)
        try:
            declared = content_length(scope)
            if declared is not None and declared > limit:
                what = "SIETCH_MAX_UPLOAD_BYTES" if upload else "SIETCH_MAX_REQUEST_BYTES"
                await exchange.answer(
                    413,
                    "payload_too_large",
                    f"the request body ({declared} bytes) exceeds the limit of {limit} ({what})",
                )
            else:
                await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            errors_log.exception(
                "unhandled error in %s %s (%s)", scope["method"], scope["path"], exchange.request_id
            )
            self.metrics.errors.labels("internal").inc()
            if exchange.status == 0:
                await exchange.answer(
                    500, "internal", f"internal server error (request id {exchange.request_id})"
                )
        finally:
            self._record(scope, exchange)

    def _record(self, scope: Scope, exchange: _Exchange) -> None:
        """The request's latency metric and its access-log line."""
        elapsed = time.perf_counter() - exchange.started
        route_path = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.request_seconds.labels(
            scope["method"], route_path, str(exchange.status)
        ).observe(elapsed)
        log.info(
            "%s %s %d %.1fms",
            scope["method"],
            scope["path"],
            exchange.status,
            elapsed * 1000,
            extra={
                "request_id": exchange.request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": route_path,
                "status": exchange.status,
                "latency_ms": round(elapsed * 1000, 2),
                "bytes_in": exchange.received,
                "bytes_out": exchange.sent,
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


def content_length(scope: Scope) -> int | None:
    """The request's Content-Length, if it has a valid one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None

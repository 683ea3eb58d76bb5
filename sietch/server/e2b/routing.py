"""Sandbox traffic without wildcard DNS: the e2b SDK sends every envd request to
``E2B_SANDBOX_URL`` with the sandbox in ``E2b-Sandbox-Id`` and the port in
``E2b-Sandbox-Port``. :class:`SandboxTraffic` re-addresses such a request to
``/e2b/envd/{sandbox_id}{path}`` (the routes of :mod:`.envd`), so it shares the main
port, its access log and its metrics with the rest of the API.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

ENVD_PORT = 49983
"""The port envd listens on in an E2B sandbox, named by the SDK in ``E2b-Sandbox-Port``."""
PREFIX = "/e2b/envd"


class SandboxTraffic:
    """ASGI middleware: requests naming a sandbox go to its envd routes, others pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        sandbox_id = headers.get(b"e2b-sandbox-id")
        if sandbox_id is None:
            await self.app(scope, receive, send)
            return
        port = headers.get(b"e2b-sandbox-port", str(ENVD_PORT).encode())
        if port != str(ENVD_PORT).encode():
            await _refuse(send, f"port {port.decode(errors='replace')}: only envd's is served")
            return
        prefix = f"{PREFIX}/{quote(sandbox_id.decode(errors='replace'), safe='')}"
        raw = scope.get("raw_path") or scope["path"].encode()
        scope = {**scope, "path": prefix + scope["path"], "raw_path": prefix.encode() + raw}
        await self.app(scope, receive, send)


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"code": 502, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 502,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})

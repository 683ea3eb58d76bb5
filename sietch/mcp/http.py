"""MCP over streamable HTTP at ``/mcp`` on the main server, with the server's API key.

The tools call the server's own manager (see :mod:`sietch.mcp.backend`). The
SDK's session manager must run for the app's whole life: :meth:`McpEndpoint.run`
is entered from the app's lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sietch.core.manager import Manager
from sietch.errors import SietchError
from sietch.mcp.backend import ManagerBackend
from sietch.mcp.server import build_server
from sietch.server.deps import authenticate
from sietch.server.handlers import error_response

PATH = "/mcp"


class McpEndpoint:
    """The ASGI endpoint: checks the API key, then hands the request to the MCP SDK."""

    def __init__(self, manager: Callable[[], Manager], host: str) -> None:
        self.server = build_server(ManagerBackend(manager))
        # The SDK guards a loopback server against DNS rebinding (Host/Origin checks).
        self._app: ASGIApp = self.server.streamable_http_app(streamable_http_path=PATH, host=host)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            authenticate(HTTPConnection(scope))
        except SietchError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def route(self) -> Route:
        """A route taking every method at exactly ``/mcp`` (a Mount would redirect to /mcp/)."""
        return Route(PATH, endpoint=self, include_in_schema=False)

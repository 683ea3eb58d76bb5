"""MCP at a gateway's ``/mcp``: the tools of ``sietch mcp``, acting through the public SDK
against this gateway itself, so they see the whole cluster (every node's sandboxes and
snapshots, placement, quotas), never one node's manager.

Each MCP request carries its caller's API key; the tools act with that key (one SDK
client per key, kept for the next request: an MCP session makes many), so a tenant sees
what it sees through the REST API and nothing more.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sietch.client import AsyncClient
from sietch.core.tenants import Caller
from sietch.errors import AuthenticationError, SietchError
from sietch.mcp.backend import Backend
from sietch.mcp.sdk import ClientBackend
from sietch.mcp.server import build_server
from sietch.server.gateway.forwarding import api_key
from sietch.server.handlers import error_response
from sietch.server.mcp import PATH

_KEY: contextvars.ContextVar[str] = contextvars.ContextVar("sietch_gateway_mcp_key")


class KeyedBackend:
    """The tools' backend: the :class:`ClientBackend` of the current request's key."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._backends: dict[str, ClientBackend] = {}
        """Per valid key (only those reach here): as many as the cluster has keys."""

    def _current(self) -> ClientBackend:
        key = _KEY.get(None)
        if key is None:  # never: the endpoint sets it; refuse rather than act for nobody
            raise AuthenticationError("the MCP request carried no API key")
        backend = self._backends.get(key)
        if backend is None:
            # No client-side timeout: run_command bounds each command by its own timeout_s.
            backend = ClientBackend(AsyncClient(self.url, key, timeout=None))
            self._backends[key] = backend
        return backend

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method: Callable[..., Awaitable[Any]] = getattr(self._current(), name)
        return method

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.client.close()
        self._backends.clear()


class GatewayMcp:
    """The ASGI endpoint: the key checked as the gateway checks every request's, then the
    MCP SDK's streamable HTTP app."""

    def __init__(
        self, url: str, host: str, resolve: Callable[[HTTPConnection], Awaitable[Caller | None]]
    ) -> None:
        self.backend = KeyedBackend(url)
        self.server = build_server(cast(Backend, self.backend))
        self.resolve = resolve
        # The SDK guards a loopback server against DNS rebinding (Host/Origin checks).
        self._app: ASGIApp = self.server.streamable_http_app(streamable_http_path=PATH, host=host)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        try:
            async with self.server.session_manager.run():
                yield
        finally:
            await self.backend.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = HTTPConnection(scope)
        try:
            if await self.resolve(conn) is None:
                raise AuthenticationError("MCP needs an API key (Authorization: Bearer ...)")
        except SietchError as exc:
            await error_response(exc)(scope, receive, send)
            return
        token = _KEY.set(api_key(conn) or "")  # none: a gateway without auth
        try:
            await self._app(scope, receive, send)
        finally:
            _KEY.reset(token)

    def route(self) -> Route:
        """A route taking every method at exactly ``/mcp`` (a Mount would redirect)."""
        return Route(PATH, endpoint=self, include_in_schema=False)

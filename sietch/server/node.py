"""``sietch serve --node``: the standalone server, plus membership in a cluster.

- It serves on its internal port only (``internal_port``), and only to those who show
  the cluster secret (:class:`InternalPort`): gateways, and nodes copying snapshots. A
  public API key alone is refused; the caller a gateway vouches for is the request's
  (:func:`sietch.server.auth.resolve`), and so is the scheme the client spoke to it.
- It registers in the catalog, heartbeats and reports what it holds
  (:class:`sietch.cluster.membership.NodeAgent`); after every request that may have
  changed something it reports the change before answering (:class:`ReportChanges`), so
  a gateway routes the next request for a new sandbox to it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from sietch.cluster.membership import NodeAgent
from sietch.cluster.tenants import ClusterTenants
from sietch.cluster.wire import SCHEME_HEADER, SECRET_HEADER, secret_matches
from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.errors import AuthenticationError, SietchError
from sietch.server.exec_ws import refuse
from sietch.server.handlers import error_response
from sietch.server.routes import internal
from sietch.server.routes.sandboxes import to_public
from sietch.server.routes.snapshots import snapshot_public

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/api/v1/health"})
"""What a node answers without the secret: liveness probes, which learn nothing."""
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
DATA_PLANE = ("/exec", "/files", "/processes", "/proxy/", "/e2b/envd/", "/cmd")
"""Paths of the hot requests that run things in a sandbox rather than change what the
node holds: not worth a report each (a sandbox one of them wakes is reported at the next
heartbeat)."""


class InternalPort:
    """ASGI middleware: refuse every request (HTTP or WebSocket) without the secret; with
    it, the request has the scheme the client spoke to the gateway."""

    def __init__(self, app: ASGIApp, secret: str) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_PATHS:
            headers = dict(scope["headers"])
            given = headers.get(SECRET_HEADER.encode())
            if secret_matches(given.decode("latin-1") if given else None, self.secret):
                if (scheme := headers.get(SCHEME_HEADER.encode())) is not None:
                    scope = {**scope, "scheme": client_scheme(scope["type"], scheme)}
            else:
                exc = AuthenticationError(
                    "this is a cluster node's internal port: it accepts the cluster secret "
                    "only, never an API key; send requests to a gateway"
                )
                if scope["type"] == "http":
                    await error_response(exc)(scope, receive, send)
                else:
                    await refuse(WebSocket(scope, receive, send), exc)
                return
        await self.app(scope, receive, send)


def client_scheme(kind: str, gateway_saw: bytes) -> str:
    """The scope's scheme for a request the client sent a gateway as ``gateway_saw``."""
    secure = gateway_saw in (b"https", b"wss")
    if kind == "websocket":
        return "wss" if secure else "ws"
    return "https" if secure else "http"


class ReportChanges:
    """ASGI middleware: after a request that may change what the node holds (any but a
    read), report to the catalog before the response starts."""

    def __init__(self, app: ASGIApp, agent: NodeAgentRef) -> None:
        self.app = app
        self.agent = agent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        agent = self.agent.agent
        if (
            scope["type"] != "http"
            or scope["method"] in _READS
            or agent is None
            or any(part in scope["path"] for part in DATA_PLANE)
        ):
            await self.app(scope, receive, send)
            return

        async def reported(message: Message) -> None:
            if message["type"] == "http.response.start":
                try:
                    await agent.sync()
                except SietchError as exc:  # the change is made: the heartbeat reports it
                    log.warning("reporting to the catalog failed: %s", exc)
            await send(message)

        await self.app(scope, receive, reported)


class NodeAgentRef:
    """The agent once the lifespan has started it (middleware is built before)."""

    agent: NodeAgent | None = None


def install(app: FastAPI, settings: Settings, agent: NodeAgentRef) -> None:
    """The node's middleware and its routes for other nodes (behind the secret)."""
    assert settings.cluster_secret is not None  # Settings refuses a node without one
    app.add_middleware(ReportChanges, agent=agent)
    app.add_middleware(InternalPort, secret=settings.cluster_secret.get_secret_value())
    app.include_router(internal.router)


@asynccontextmanager
async def membership(
    settings: Settings, tenants: ClusterTenants, manager: Manager, ref: NodeAgentRef
) -> AsyncIterator[NodeAgent]:
    """Register the node and heartbeat until the server stops."""
    agent = NodeAgent(
        tenants.catalog,
        manager,
        settings,
        lambda info: to_public(info).model_dump(mode="json"),
        lambda snap: snapshot_public(snap).model_dump(mode="json"),
    )
    await agent.start()
    task = asyncio.create_task(agent.run())
    ref.agent = agent
    try:
        yield agent
    finally:
        ref.agent = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        agent.close()

"""The API's routers, collected in one place."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sietch.server.deps import require_api_key
from sietch.server.routes import (
    commands,
    files,
    images,
    ports,
    processes,
    sandboxes,
    snapshots,
    system,
)
from sietch.server.routes.proxy import http_proxy, ws_relay

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(system.public_router)
_protected = [Depends(require_api_key)]
for module in (system, sandboxes, commands, processes, files, snapshots, ports, http_proxy,
               images):  # fmt: skip
    api_router.include_router(module.router, dependencies=_protected)
api_router.include_router(snapshots.sandbox_router, dependencies=_protected)
# WebSockets authenticate inside the handler, so a refusal can carry a JSON body.
api_router.include_router(commands.ws_router)
api_router.include_router(ws_relay.router)

metrics_router = system.metrics_router

__all__ = ["api_router", "metrics_router"]

"""The API's routers, collected in one place."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sietch.server.deps import require_api_key
from sietch.server.routes import (
    code,
    commands,
    desktop,
    files,
    ide,
    images,
    lifecycle,
    links,
    ports,
    processes,
    sandboxes,
    snapshots,
    system,
    tenants,
    usage,
    viewer,
)
from sietch.server.routes.proxy import http_proxy, ws_relay

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(system.public_router)
_protected = [Depends(require_api_key)]
_routers = (
    system,
    tenants,
    sandboxes,
    commands,
    code,
    processes,
    files,
    snapshots,
    ports,
    usage,
    desktop,
    http_proxy,
    lifecycle,
    images,
)
# require_api_key also refuses (404) another tenant's {sandbox_id} or {snapshot_id} in a
# path: a router included with it here scopes every route it has (sietch.server.deps).
for module in _routers:
    api_router.include_router(module.router, dependencies=_protected)
for module in (viewer, ide):  # desktop viewer and IDE: links for the browser (browser_auth)
    api_router.include_router(module.router, dependencies=_protected)
    api_router.include_router(module.browser_router)
api_router.include_router(links.router, dependencies=_protected)
api_router.include_router(snapshots.sandbox_router, dependencies=_protected)
# WebSockets authenticate inside the handler, so a refusal can carry a JSON body.
api_router.include_router(commands.ws_router)
api_router.include_router(ws_relay.router)

metrics_router = system.metrics_router
static_router = viewer.static_router

__all__ = ["api_router", "metrics_router", "static_router"]

"""The web console at ``/ui``: sandboxes, terminal, files, desktop and the snapshot tree.

Server-rendered pages (Jinja2) with htmx for what refreshes and one small
script per page; signed in with an API key (:mod:`.session`), and every
action goes through the REST API's own route functions with the login's caller.
"""

from __future__ import annotations

from fastapi import APIRouter

from sietch.server.console import assets, auth_routes, sandbox, sandboxes, snapshots

router = APIRouter(prefix="/ui", include_in_schema=False)
for _module in (assets, auth_routes, sandboxes, sandbox, snapshots):
    router.include_router(_module.router)
router.include_router(sandbox.ws_router)

__all__ = ["router"]

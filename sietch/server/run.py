"""Run the server with uvicorn (what ``sietch serve`` and ``python -m sietch.server`` do)."""

from __future__ import annotations

import uvicorn

from sietch.config import Settings
from sietch.core.tenants import Tenants
from sietch.server import logs
from sietch.server.app import create_app


def serve(settings: Settings, *, tenants: Tenants | None = None, log_format: str = "json") -> None:
    """Serve until interrupted; the manager is single-process, so one worker only."""
    logs.configure(fmt=log_format)
    app = create_app(settings, tenants=tenants)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        ws_max_size=4 * 1024 * 1024,
        timeout_graceful_shutdown=10,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )

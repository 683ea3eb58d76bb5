"""Run the server with uvicorn (what ``sietch serve`` and ``python -m sietch.server`` do)."""

from __future__ import annotations

import logging

import uvicorn
from starlette.types import ASGIApp

from sietch.cluster.tenants import ClusterTenants
from sietch.config import Settings
from sietch.core.tenants import TenantStore
from sietch.server import logs
from sietch.server.app import create_app, open_tenants
from sietch.server.gateway import create_gateway_app

log = logging.getLogger(__name__)


def serve(
    settings: Settings, *, tenants: TenantStore | None = None, log_format: str = "json"
) -> None:
    """Serve until interrupted; the manager is single-process, so one worker only.

    A node serves on its internal port only; a gateway (no manager) on the public one."""
    logs.configure(fmt=log_format)
    app: ASGIApp
    port = settings.internal_port if settings.role == "node" else settings.port
    if settings.role == "gateway":
        if tenants is None:
            tenants, new_key = open_tenants(settings)
            if new_key:
                log.warning(
                    "generated an admin API key of tenant 'default' (shown only "
                    "now; its hash is in the cluster catalog): %s",
                    new_key,
                )
        assert isinstance(tenants, ClusterTenants)
        app = create_gateway_app(settings, tenants)
    else:
        app = create_app(settings, tenants=tenants)
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        ws_max_size=4 * 1024 * 1024,
        timeout_graceful_shutdown=10,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )

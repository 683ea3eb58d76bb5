"""The FastAPI application: ``create_app(settings)``; the manager lives in its lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from sietch import __version__
from sietch.cluster.catalog import Catalog
from sietch.cluster.tenants import ClusterTenants
from sietch.config import Settings, get_settings
from sietch.core.manager import Manager
from sietch.core.tenants import Tenants, TenantStore
from sietch.server import arrakis, console, e2b, handlers, node
from sietch.server.console.logins import shared_logins
from sietch.server.deps import require_admin, require_api_key, require_manager
from sietch.server.mcp import McpEndpoint
from sietch.server.middleware import RequestMiddleware
from sietch.server.routes import api_router, metrics_router, static_router
from sietch.server.routes.proxy.host_routes import HostRoutes
from sietch.server.state import ServerState

log = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    """``"{tag}-{name}"``, e.g. ``sandboxes-create``: generated clients read well."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def open_tenants(settings: Settings) -> tuple[TenantStore, str | None]:
    """The tenants catalog, the pre-tenant key file imported into it; and, when it has no
    key at all (a first start) and auth is on, a new admin key, returned to be shown once.

    In a cluster, the catalog's tenants; a gateway makes the first key, a node none."""
    if settings.role != "standalone":
        assert settings.catalog_url is not None  # Settings refuses a cluster role without
        catalog = Catalog(settings.catalog_url, node_timeout_s=settings.node_timeout_s)
        shared = ClusterTenants(catalog, settings.tenant_quota)
        first = settings.role == "gateway" and settings.auth
        return shared, shared.ensure_admin() if first else None
    tenants = Tenants(settings.tenants_path, settings.tenant_quota)
    if imported := tenants.import_legacy(settings.api_keys_path):
        log.info(
            "%d API key(s) of %s are admin keys of tenant 'default'",
            imported,
            settings.api_keys_path,
        )
    return tenants, tenants.ensure_admin() if settings.auth else None


def create_app(
    settings: Settings | None = None,
    *,
    tenants: TenantStore | None = None,
    manager: Manager | None = None,
) -> FastAPI:
    """Build the app; the manager starts (and re-adopts running VMs) when it starts serving.

    ``manager``: serve one the caller has started and will close (tests share one between
    the app and their own fixtures, so a desktop template is booted once)."""
    settings = settings or get_settings()
    if tenants is None:
        tenants, new_key = open_tenants(settings)
        if new_key:
            log.warning(
                "generated an admin API key of tenant 'default' (shown only now; its hash "
                "is in %s): %s",
                settings.tenants_path,
                new_key,
            )
    if not settings.auth:
        log.warning("AUTHENTICATION IS OFF: anyone who can reach %s may run code", settings.host)
    is_node = settings.role == "node"
    state = ServerState(
        settings=settings,
        tenants=tenants,
        auth=settings.auth,
        gateway_callers=is_node,
        console_logins=shared_logins(tenants),
    )
    agent = node.NodeAgentRef()
    mcp = McpEndpoint(lambda: require_manager(state), state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # persistent: VMs outlive a server restart and are adopted again by the next start.
            served = manager
            if served is None:
                served = await stack.enter_async_context(
                    Manager(settings, persistent=True, quota_of=tenants.quota)
                )
            state.manager = served
            if is_node:
                assert isinstance(tenants, ClusterTenants)
                await stack.enter_async_context(node.membership(settings, tenants, served, agent))
            state.metrics.watch(served)
            log.info("manager started (accel=%s, state in %s)", served.accel, settings.state_dir)
            try:
                async with mcp.run():
                    yield
            finally:
                state.manager = None
                await state.close_proxy()

    app = FastAPI(
        title="Sietch",
        version=__version__,
        summary="Self-hosted microVM sandboxes for AI agents",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.sietch = state
    handlers.install(app)
    app.add_middleware(RequestMiddleware, settings=settings, metrics=state.metrics)
    app.add_middleware(e2b.SandboxTraffic)  # E2B's envd requests, named by their headers
    if is_node:
        node.install(app, settings, agent)
    if settings.proxy_domain:
        # Outermost, so the access log and metrics see the proxy route it re-addresses to.
        app.add_middleware(HostRoutes, domain=settings.proxy_domain)
    app.include_router(api_router)
    app.include_router(
        metrics_router, dependencies=[Depends(require_api_key), Depends(require_admin)]
    )
    app.include_router(static_router)  # noVNC and the desktop viewer's script: public files
    app.include_router(console.router)  # the web console at /ui (its own sign-in)
    # Arrakis' API, so py-arrakis works with a URL change (auth: sietch.server.arrakis.access).
    app.include_router(arrakis.public_router)
    app.include_router(arrakis.router)
    # E2B's API and envd, so the e2b SDK works with E2B_API_URL/E2B_SANDBOX_URL set.
    app.include_router(e2b.router)
    app.include_router(e2b.envd_router)
    app.include_router(e2b.service_router)
    # MCP over streamable HTTP; the tools call this process's manager (see sietch.server.mcp).
    app.router.routes.append(mcp.route())
    return app

"""What one app instance holds between requests."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.quotas import TokenBucket
from sietch.core.tenants import TenantStore
from sietch.errors import LimitExceeded
from sietch.server.browser_auth import BrowserTokens
from sietch.server.metrics import Metrics

_SERVICE_CLIENTS = 64
"""HTTP clients kept for guest services' unix sockets (one per sandbox service in use)."""


@dataclass
class ServerState:
    settings: Settings
    tenants: TenantStore
    """Tenants, their keys and quotas (quotas apply with authentication off too)."""
    auth: bool = True
    """False: every request is an admin of the default tenant (loopback only)."""
    gateway_callers: bool = False
    """A cluster node: the caller is the one a gateway vouches for (sietch.cluster.wire)."""
    metrics: Metrics = field(default_factory=Metrics)
    manager: Manager | None = None
    create_bucket: TokenBucket = field(init=False)
    browser_tokens: BrowserTokens = field(default_factory=BrowserTokens)
    """Browser links and their cookies (desktop viewer, IDE): see sietch.server.browser_auth."""
    console_logins: BrowserTokens | None = None
    """Where console logins live when not in ``browser_tokens`` (a cluster's catalog)."""
    _proxy: httpx.AsyncClient | None = field(default=None, init=False)
    _services: OrderedDict[Path, httpx.AsyncClient] = field(default_factory=OrderedDict, init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.create_bucket = TokenBucket(s.create_rate_per_min / 60.0, s.create_burst)

    def proxy_client(self) -> httpx.AsyncClient:
        """The HTTP client the port proxy shares (pooled connections to exposed ports)."""
        if self._proxy is None:
            self._proxy = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, read=None, write=None),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
                follow_redirects=False,
                trust_env=False,
            )
        return self._proxy

    async def service_client(self, socket: Path) -> httpx.AsyncClient:
        """The HTTP client for a guest service behind a unix socket (the IDE): pooled per
        socket, the least recently used closed beyond a few dozen."""
        client = self._services.pop(socket, None)
        if client is None:
            client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(socket)),
                timeout=httpx.Timeout(10.0, read=None, write=None),
                follow_redirects=False,
                trust_env=False,
            )
        self._services[socket] = client
        while len(self._services) > _SERVICE_CLIENTS:
            await self._services.popitem(last=False)[1].aclose()
        return client

    async def close_proxy(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.aclose()
        services, self._services = self._services, OrderedDict()
        for client in services.values():
            await client.aclose()

    def admit_create(self) -> None:
        wait = self.create_bucket.take()
        if wait:
            s = self.settings
            raise LimitExceeded(
                f"too many sandbox creations: at most {s.create_burst} at once and "
                f"{s.create_rate_per_min:g} per minute (SIETCH_CREATE_RATE_PER_MIN, "
                "SIETCH_CREATE_BURST)",
                retry_after=round(wait, 2),
            )

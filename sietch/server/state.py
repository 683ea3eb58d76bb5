"""What one app instance holds between requests."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from sietch.config import Settings
from sietch.core.manager import Manager
from sietch.core.quotas import TokenBucket
from sietch.core.tenants import Tenants
from sietch.errors import LimitExceeded
from sietch.server.metrics import Metrics


@dataclass
class ServerState:
    settings: Settings
    tenants: Tenants
    """Tenants, their keys and quotas (quotas apply with authentication off too)."""
    auth: bool = True
    """False: every request is an admin of the default tenant (loopback only)."""
    metrics: Metrics = field(default_factory=Metrics)
    manager: Manager | None = None
    create_bucket: TokenBucket = field(init=False)
    _proxy: httpx.AsyncClient | None = field(default=None, init=False)

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

    async def close_proxy(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.aclose()

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

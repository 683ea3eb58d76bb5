"""A cluster's console logins: :class:`BrowserTokens` whose grants are rows of the catalog
(:mod:`sietch.cluster.grants`), so that gateways stay stateless and a login made through
one is honoured by every gateway and node. The promises stay those of one server's: an
opaque token (only its digest stored), an expiry, revoked at sign-out (for every gateway
at once) and ended when its key is revoked (:func:`.session.caller_of_login`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sietch.cluster.grants import GrantTable
from sietch.cluster.tenants import ClusterTenants
from sietch.core.tenants import TenantStore
from sietch.server.browser_auth import KEEP_ENDED_S, BrowserTokens, Grant


@dataclass
class SharedLogins(BrowserTokens):
    table: GrantTable = field(kw_only=True)

    def _get(self, digest: str) -> Grant | None:
        record = self.table.get(digest)
        return None if record is None else Grant(**record)

    def _put(self, digest: str, grant: Grant) -> None:
        self.table.put(digest, asdict(grant), grant.expires_at)

    def _forget_ended(self) -> None:
        self.table.forget_before(self.clock() - KEEP_ENDED_S)


def shared_logins(tenants: TenantStore) -> SharedLogins | None:
    """A cluster's (its tenants are the catalog's); None for one machine's."""
    return SharedLogins(table=GrantTable(tenants.catalog)) if isinstance(
        tenants, ClusterTenants) else None  # fmt: skip

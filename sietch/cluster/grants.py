"""Browser grants kept in the catalog, so that every gateway and node of a cluster knows
a console login made through any of them (one machine keeps them in its memory:
:class:`sietch.server.browser_auth.BrowserTokens`). Rows are a token's SHA-256, the grant
as JSON, and its expiry; the token itself is never stored."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from sietch.cluster.catalog import Catalog


class GrantTable:
    """The ``browser_grants`` table of ``catalog`` (which it does not close)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def get(self, digest: str) -> dict[str, Any] | None:
        rows = self.catalog.rows(
            "SELECT grant_record FROM browser_grants WHERE digest = %s", (digest,)
        )
        return rows[0][0] if rows else None

    def put(self, digest: str, record: dict[str, Any], expires_at: float) -> None:
        self.catalog.rows(
            "INSERT INTO browser_grants (digest, grant_record, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (digest) DO UPDATE SET grant_record = EXCLUDED.grant_record, "
            "expires_at = EXCLUDED.expires_at",
            (digest, Jsonb(record), expires_at),
        )

    def forget_before(self, horizon: float) -> None:
        self.catalog.rows("DELETE FROM browser_grants WHERE expires_at < %s", (horizon,))

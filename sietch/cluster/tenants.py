"""Tenants, their keys (SHA-256 digests) and quotas in the cluster's catalog: what
:class:`sietch.core.tenants.Tenants` keeps in one machine's SQLite, here for every
gateway and node at once. A lookup is one indexed query, so a key revoked through any
gateway is refused by all from the next request on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sietch.cluster.catalog import Catalog
from sietch.core.quotas import Quota
from sietch.core.tenants import (
    Caller,
    KeyRecord,
    TenantRecord,
    TenantStore,
    check_tenant_name,
    name_taken,
)

_KEY_COLUMNS = "id, tenant, name, admin, created_at, revoked_at"


class ClusterTenants(TenantStore):
    """The tenants of the catalog ``catalog`` (which it does not close)."""

    def __init__(self, catalog: Catalog, defaults: Mapping[str, object] | None = None) -> None:
        super().__init__(defaults)
        self.catalog = catalog

    def close(self) -> None:
        """Nothing of its own: the catalog's connection is its owner's to close."""

    def lookup_digest(self, key_digest: str) -> Caller | None:
        rows = self.catalog.rows(
            "SELECT tenant, name, admin FROM api_keys WHERE digest = %s AND revoked_at IS NULL",
            (key_digest,),
        )
        return Caller(*rows[0]) if rows else None

    def quota(self, tenant: str) -> Quota:
        rows = self.catalog.rows("SELECT quota FROM tenants WHERE name = %s", (tenant,))
        return self._effective(rows[0][0] if rows else {})

    def has_keys(self) -> bool:
        return bool(self.catalog.rows("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1"))

    def _add_key(self, record: KeyRecord, key_digest: str) -> None:
        try:
            with self.catalog.cursor(transaction=True) as cur:
                _ensure_tenant(cur, record.tenant)
                cur.execute(
                    f"INSERT INTO api_keys ({_KEY_COLUMNS}, digest) "
                    "VALUES (%s, %s, %s, %s, %s, NULL, %s)",
                    (
                        record.id,
                        record.tenant,
                        record.name,
                        record.admin,
                        record.created_at,
                        key_digest,
                    ),
                )
        except psycopg.errors.UniqueViolation:
            raise name_taken(record.tenant, record.name) from None

    def keys(self, tenant: str | None = None, *, revoked: bool = False) -> list[KeyRecord]:
        rows = self.catalog.rows(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE (%s::text IS NULL OR tenant = %s) "
            "AND (%s OR revoked_at IS NULL) ORDER BY tenant, created_at",
            (tenant, tenant, revoked),
        )
        return [KeyRecord(*r) for r in rows]

    def _revoke(self, key_id: str) -> None:
        self.catalog.rows("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (key_id,))

    def set_quota(self, tenant: str, **limits: object) -> Quota:
        with self.catalog.cursor(transaction=True) as cur:
            _ensure_tenant(cur, tenant)
            cur.execute("SELECT quota FROM tenants WHERE name = %s FOR UPDATE", (tenant,))
            row = cur.fetchone()
            assert row is not None
            own = Quota.model_validate({**row[0], **limits})
            cur.execute(
                "UPDATE tenants SET quota = %s WHERE name = %s",
                (Jsonb(json.loads(own.model_dump_json(exclude_unset=True))), tenant),
            )
        return own

    def tenants(self) -> list[TenantRecord]:
        rows = self.catalog.rows(
            "SELECT t.name, t.quota, t.created_at, count(k.id) FROM tenants t "
            "LEFT JOIN api_keys k ON k.tenant = t.name AND k.revoked_at IS NULL "
            "GROUP BY t.name ORDER BY t.name"
        )
        return [TenantRecord(r[0], Quota.model_validate(r[1]), r[2], r[3]) for r in rows]

    def import_legacy(self, path: Path) -> int:
        """Nothing to import: a cluster's keys were never in a node's flat key file."""
        return 0


def _ensure_tenant(cur: psycopg.Cursor[Any], tenant: str) -> None:
    cur.execute(
        "INSERT INTO tenants (name, created_at) VALUES (%s, now()) ON CONFLICT DO NOTHING",
        (check_tenant_name(tenant),),
    )

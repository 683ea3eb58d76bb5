"""Tenants, their API keys (hashed) and quotas, for the whole cluster.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE tenants (
            name       TEXT PRIMARY KEY,
            quota      JSONB NOT NULL DEFAULT '{}',
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE api_keys (
            id         TEXT PRIMARY KEY,
            tenant     TEXT NOT NULL REFERENCES tenants (name),
            name       TEXT NOT NULL,
            admin      BOOLEAN NOT NULL DEFAULT FALSE,
            digest     TEXT NOT NULL UNIQUE,
            created_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ
        );
        CREATE UNIQUE INDEX api_keys_live_name ON api_keys (tenant, name)
            WHERE revoked_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE api_keys; DROP TABLE tenants")

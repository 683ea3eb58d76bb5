"""Console logins shared by every gateway and node: a login made through one gateway is
checked by whichever serves its next request (one machine keeps them in memory).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE browser_grants (
            digest TEXT PRIMARY KEY,
            grant_record JSONB NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX browser_grants_expires_at ON browser_grants (expires_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE browser_grants")

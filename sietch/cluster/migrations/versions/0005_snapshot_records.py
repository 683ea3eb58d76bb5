"""Each snapshot's public record, as its node reports it: what a console behind a gateway
draws in the snapshot tree for the snapshots of other nodes (and what a restore's
placement sizes). Rows written by earlier versions have none until their node reports.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE snapshots ADD COLUMN record JSONB")


def downgrade() -> None:
    op.execute("ALTER TABLE snapshots DROP COLUMN record")

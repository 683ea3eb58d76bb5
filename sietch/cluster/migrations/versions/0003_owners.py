"""Who may use what a node holds: an image's tenant (none: a built-in, everyone's), and
which snapshots are templates (everyone's, as on one machine); when a sandbox last moved
to another node (a hibernated one resumed elsewhere), so gateways forget where it was.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE images ADD COLUMN tenant TEXT;
        ALTER TABLE snapshots ADD COLUMN template BOOLEAN NOT NULL DEFAULT FALSE;
        ALTER TABLE sandboxes ADD COLUMN moved_at TIMESTAMPTZ;
        CREATE INDEX sandboxes_moved_at ON sandboxes (moved_at) WHERE moved_at IS NOT NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE images DROP COLUMN tenant; ALTER TABLE snapshots DROP COLUMN template; "
        "ALTER TABLE sandboxes DROP COLUMN moved_at"
    )

"""Placements in flight: a gateway reserves what a create (or restore, or move) will hold
on the node it picked, so that creates placed at the same moment, through any gateway,
count each other; the node's report of a new sandbox takes a reservation's place (a row
per sandbox: a fork of N reserves N).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE reservations (
            id         BIGSERIAL PRIMARY KEY,
            node       TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
            vcpus      INTEGER NOT NULL,
            memory_mib INTEGER NOT NULL,
            made_at    TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX reservations_node ON reservations (node);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE reservations")

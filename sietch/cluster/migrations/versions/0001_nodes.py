"""Nodes and what each holds: sandboxes, snapshots, images.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE nodes (
            name            TEXT PRIMARY KEY,
            url             TEXT NOT NULL,
            vcpus           INTEGER NOT NULL,
            memory_mib      BIGINT NOT NULL,
            disk_mib        BIGINT NOT NULL,
            max_sandboxes   INTEGER NOT NULL,
            free_memory_mib BIGINT NOT NULL,
            free_disk_mib   BIGINT NOT NULL,
            load            DOUBLE PRECISION NOT NULL,
            sandboxes       INTEGER NOT NULL,
            accelerator     TEXT NOT NULL,
            qemu_version    TEXT NOT NULL,
            registered_at   TIMESTAMPTZ NOT NULL,
            last_heartbeat  TIMESTAMPTZ NOT NULL,
            state           TEXT NOT NULL DEFAULT 'up'
        );
        CREATE TABLE sandboxes (
            id         TEXT PRIMARY KEY,
            node       TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
            tenant     TEXT NOT NULL,
            state      TEXT NOT NULL,
            vcpus      INTEGER NOT NULL,
            memory_mib INTEGER NOT NULL,
            record     JSONB NOT NULL
        );
        CREATE INDEX sandboxes_node ON sandboxes (node);
        CREATE INDEX sandboxes_tenant ON sandboxes (tenant);
        CREATE TABLE snapshots (
            id         TEXT NOT NULL,
            node       TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
            tenant     TEXT NOT NULL,
            size_bytes BIGINT NOT NULL,
            PRIMARY KEY (id, node)
        );
        CREATE TABLE images (
            name TEXT NOT NULL,
            node TEXT NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
            PRIMARY KEY (name, node)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE images; DROP TABLE snapshots; DROP TABLE sandboxes; DROP TABLE nodes")

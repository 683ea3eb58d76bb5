"""Alembic environment: runs the revisions on the connection :mod:`sietch.cluster.migrate`
hands over (``config.attributes["connection"]``), inside its transaction; no
``alembic.ini``, no models."""

from __future__ import annotations

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

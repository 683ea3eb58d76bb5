"""Alembic's script directory for the cluster catalog (see :mod:`sietch.cluster.migrate`)."""

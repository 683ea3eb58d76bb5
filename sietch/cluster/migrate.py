"""The catalog's schema: Alembic revisions in :mod:`sietch.cluster.migrations`.

Every node and gateway upgrades the catalog to the newest revision it knows when it
starts; an advisory lock makes concurrent starts take turns (the first upgrades, the
rest find nothing to do). The revisions are plain SQL: the catalog itself talks to
PostgreSQL with psycopg, not through SQLAlchemy models.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

_SCRIPTS = Path(__file__).parent / "migrations"
_LOCK = 0x5137C4
"""pg_advisory_xact_lock key held while migrating ("sietch")."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def _engine(url: str) -> sqlalchemy.Engine:
    """SQLAlchemy (Alembic's) over psycopg 3, for a ``postgresql://`` URL."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return sqlalchemy.create_engine(url, poolclass=NullPool)


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the catalog's schema to ``revision`` (from empty, or from any earlier one)."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
            config = _config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the catalog is at (None: empty)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str:
    """The newest revision this version of Sietch knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found

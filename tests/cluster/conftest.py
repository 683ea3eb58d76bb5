"""The cluster tests' catalogs, in the run's one PostgreSQL (``postgres``, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.postgres import Postgres
from tests.desktop.browser import browser

__all__ = ["browser"]


@pytest.fixture
def catalog_url(postgres: Postgres) -> Iterator[str]:
    """A new, empty database (no schema yet) for one test."""
    with postgres.database() as name:
        yield postgres.url(name)

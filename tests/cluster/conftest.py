"""The cluster tests' PostgreSQL, started once per test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.postgres import Postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def catalog_url(postgres: Postgres) -> Iterator[str]:
    """A new, empty database (no schema yet) for one test."""
    with postgres.database() as url:
        yield url

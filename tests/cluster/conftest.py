"""The cluster tests' PostgreSQL, started once per test run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.network import ClusterNet
from tests.cluster.postgres import Postgres


@pytest.fixture(scope="session")
def cluster_net() -> Iterator[ClusterNet]:
    """The bridge the nodes' namespaces hang on."""
    net = ClusterNet()
    net.up()
    yield net
    net.down()


@pytest.fixture(scope="session")
def postgres(cluster_net: ClusterNet) -> Iterator[Postgres]:
    """One PostgreSQL for the whole run, reachable from the nodes' namespaces too."""
    server = Postgres(listen=(cluster_net.host_address,), clients=(cluster_net.subnet,))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def catalog_url(postgres: Postgres) -> Iterator[str]:
    """A new, empty database (no schema yet) for one test."""
    with postgres.database() as name:
        yield postgres.url(name)

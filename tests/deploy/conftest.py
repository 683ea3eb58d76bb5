"""The Ray tests' network, PostgreSQL and Ray cluster, each started once per test run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from ray.cluster_utils import Cluster

from tests.cluster.network import ClusterNet
from tests.cluster.postgres import Postgres
from tests.conftest import short_tmpdir
from tests.deploy.raycluster import ray_cluster


@pytest.fixture(scope="session")
def deploy_net() -> Iterator[ClusterNet]:
    """A bridge for the Ray nodes' namespaces (the cluster tests have one of their own)."""
    net = ClusterNet()
    net.up()
    yield net
    net.down()


@pytest.fixture(scope="session")
def deploy_postgres(deploy_net: ClusterNet) -> Iterator[Postgres]:
    server = Postgres(listen=(deploy_net.host_address,), clients=(deploy_net.subnet,))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_nodes(deploy_net: ClusterNet) -> Iterator[Cluster]:
    temp_dir = short_tmpdir("ray")
    with ray_cluster(deploy_net, temp_dir) as cluster:
        yield cluster
    shutil.rmtree(temp_dir, ignore_errors=True)

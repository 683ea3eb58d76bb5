"""The Ray tests' Ray cluster, started once per test run on the run's one bridge
(``cluster_net``, tests/conftest.py); it ends with this package's tests: idle, it still
costs CPU."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from ray.cluster_utils import Cluster
from tenacity import Retrying, stop_after_delay, wait_fixed

from tests.cluster.network import ClusterNet
from tests.conftest import short_tmpdir
from tests.deploy.raycluster import ray_cluster


@pytest.fixture(scope="package")
def ray_nodes(cluster_net: ClusterNet) -> Iterator[Cluster]:
    temp_dir = short_tmpdir("ray")
    with ray_cluster(cluster_net, temp_dir) as cluster:
        yield cluster
    # Ray's last processes may still be writing their session dir as they end.
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.5), reraise=True):
        with attempt:
            shutil.rmtree(temp_dir, ignore_errors=True)
            assert not temp_dir.exists()

"""A Ray cluster of three nodes on this machine, each as if on a machine of its own.

The head runs in the host's network namespace on the test bridge's host address; each
other Ray node runs in a namespace of its own on that bridge (as the cluster tests' nodes
do, :mod:`tests.cluster.network`), so the Sietch node server its actor starts listens on
that Ray node's own address. All Ray traffic stays on the test-made bridge.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from tests.cluster.network import ClusterNet

CLONE_NEWNET = 0x40000000
WORKER_NODES = 2
# Ray reports usage to its makers unless told not to; these tests send traffic nowhere.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


@contextmanager
def network_namespace(name: str) -> Iterator[None]:
    """Run this thread (and what it starts meanwhile) in the named network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{name}") as target, open("/proc/thread-self/ns/net") as home:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({name})")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns(back)")


@contextmanager
def ray_cluster(net: ClusterNet, temp_dir: Path) -> Iterator[Cluster]:
    """The head and two Ray nodes, one CPU each, with this process as the driver; Ray's
    files (sessions, logs, its current-cluster file) under ``temp_dir``."""
    (temp_dir / "ray").mkdir()
    saved = {name: os.environ.get(name) for name in (*RAY_ENV, "RAY_TMPDIR")}
    os.environ.update({**RAY_ENV, "RAY_TMPDIR": str(temp_dir)})
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "node_ip_address": net.host_address,
            "include_dashboard": False,
        },
    )
    namespaces: list[str] = []
    try:
        for _ in range(WORKER_NODES):
            ns, address = net.add_node()
            namespaces.append(ns)
            with network_namespace(ns):
                cluster.add_node(num_cpus=1, node_ip_address=address)
        ray.init(address=cluster.address, _node_ip_address=net.host_address)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        for ns in namespaces:
            net.remove_node(ns)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

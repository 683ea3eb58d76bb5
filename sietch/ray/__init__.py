"""Sietch on a Ray cluster: a node server per Ray node, a gateway, and an SDK for trainers
that puts their sandboxes on their own Ray node first.

On the driver, once::

    import sietch.ray
    sietch.ray.start(catalog_url="postgresql://...", cluster_secret="...")  # sietch.ray.stop()

In any task or actor of the cluster::

    with sietch.ray.Sandboxes() as sandboxes, sandboxes.create() as sb:
        sb.exec("python3 -c 'print(1)'")

Every Ray node needs ``pip install 'sietch[server,ray]'`` (and what ``./bootstrap.sh
install`` sets up: QEMU, the guest images); the catalog is a PostgreSQL reachable from
all of them.
"""

from sietch.ray._client import Sandboxes, gateway_url, local_node
from sietch.ray._cluster import SietchOnRay, start, stop
from sietch.ray._server import node_name

__all__ = [
    "Sandboxes",
    "SietchOnRay",
    "gateway_url",
    "local_node",
    "node_name",
    "start",
    "stop",
]

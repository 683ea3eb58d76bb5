"""Start a Sietch cluster on a Ray cluster: a node server per Ray node, and a gateway."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sietch.ray._server import Role, ServerProcess, node_name

NAMESPACE = "sietch"
"""The Ray namespace of Sietch's actors, so any job's tasks find them."""
GATEWAY = "gateway"
READY_TIMEOUT_S = 900.0
"""A node's first start may build the guest images: minutes."""

_Server = ray.remote(ServerProcess)


def actor_name(node_id: str) -> str:
    return f"node-{node_id}"


def _actor(role: Role, node_id: str, args: tuple[Any, ...]) -> Any:
    """The server actor of ``role`` on Ray node ``node_id``: the running one, or a new one
    pinned there (never elsewhere) that Ray restarts whenever it dies.

    Detached: it outlives the driver that started it (and its handles, whose end would
    otherwise end it), serving every job of the cluster until :func:`stop`."""
    return _Server.options(
        name=GATEWAY if role == "gateway" else actor_name(node_id),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=3,
        max_concurrency=4,  # ready() may wait while stop() is called
        num_cpus=0,  # the sandboxes' QEMU processes are not Ray tasks
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(role, *args)


@dataclass
class SietchOnRay:
    """The Sietch cluster :func:`start` made: where its gateway is, which nodes it has."""

    gateway_url: str
    nodes: dict[str, str]
    """Sietch node name -> the node's internal URL."""
    ray_nodes: dict[str, str]
    """Sietch node name -> the Ray node (id) it runs on."""


def stop() -> None:
    """End the gateway and every node server, and their actors; the sandboxes' VMs keep
    running, as when any Sietch server stops, and are adopted by the next."""
    names = [
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == NAMESPACE
    ]
    actors = [ray.get_actor(name, namespace=NAMESPACE) for name in names]
    ray.get([actor.stop.remote() for actor in actors])
    for actor in actors:
        ray.kill(actor, no_restart=True)


def start(
    *,
    catalog_url: str,
    cluster_secret: str,
    settings: Mapping[str, str] | None = None,
    gateway_port: int = 7000,
    internal_port: int = 7001,
    state_root: Path | str | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> SietchOnRay:
    """Run ``sietch serve --node`` on every live Ray node and ``sietch serve --gateway`` on
    this one, all on the catalog ``catalog_url`` (PostgreSQL); returns once all answer.

    Idempotent: servers already running are kept, so calling it again after Ray nodes
    joined starts servers on those only. ``settings``: more Sietch settings for every
    server, by field name (``{"pool_size": "0"}``). A port of 0 takes a free one (for
    several Ray nodes on one machine); ``state_root``: each node's state in
    ``<state_root>/<node name>`` instead of Sietch's default state dir. The servers
    outlive this driver, for every job of the cluster, until :func:`stop`.
    """
    env = {f"SIETCH_{key.upper()}": value for key, value in (settings or {}).items()}
    env |= {"SIETCH_CATALOG_URL": catalog_url, "SIETCH_CLUSTER_SECRET": cluster_secret}
    root = Path(state_root) if state_root is not None else None

    def state_dir(name: str) -> str | None:
        return str(root / name) if root is not None else None

    node_ids = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    nodes = {
        node_name(node_id): _actor(
            "node", node_id, (env, internal_port, state_dir(node_name(node_id)))
        )
        for node_id in node_ids
    }
    here = ray.get_runtime_context().get_node_id()
    gateway = _actor("gateway", here, (env, gateway_port, state_dir(GATEWAY)))
    urls = ray.get([actor.ready.remote(ready_timeout_s) for actor in nodes.values()])
    return SietchOnRay(
        gateway_url=ray.get(gateway.ready.remote(ready_timeout_s)),
        nodes=dict(zip(nodes, urls, strict=True)),
        ray_nodes={node_name(node_id): node_id for node_id in node_ids},
    )

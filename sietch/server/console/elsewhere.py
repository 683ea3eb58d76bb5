"""On a cluster node, the console shows the whole cluster: this node's sandboxes and
snapshots live, the other nodes' as their nodes last reported them to the catalog
(sandboxes ``lost`` while their node is unreachable), so that a console behind a gateway
lists every sandbox of the login's tenant and draws its whole snapshot tree. Their pages
and actions go to their own nodes: the gateway routes each ``/ui/sandboxes/{id}/...`` by
the id in its path, and each ``/ui/snapshots/{id}/...`` to a node holding the snapshot
(a restore may copy it to another first)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from sietch.cluster.catalog import Catalog, NodeRecord
from sietch.cluster.tenants import ClusterTenants
from sietch.core.models import SandboxState
from sietch.core.tenants import Caller
from sietch.server.schemas import SandboxPublic, SnapshotPublic
from sietch.server.state import ServerState


async def _others(state: ServerState) -> tuple[Catalog, list[NodeRecord]] | None:
    """The catalog and the cluster's other nodes; None off a cluster."""
    if not isinstance(state.tenants, ClusterTenants):
        return None
    catalog = state.tenants.catalog
    nodes = await asyncio.to_thread(catalog.nodes)
    return catalog, [n for n in nodes if n.name != state.settings.node_name]


async def other_nodes(
    state: ServerState, caller: Caller, labels: dict[str, str]
) -> list[SandboxPublic]:
    """The caller's sandboxes on the cluster's other nodes; none off a cluster."""
    if (found_nodes := await _others(state)) is None:
        return []
    catalog, nodes = found_nodes
    found: list[SandboxPublic] = []
    for reachable in (True, False):
        names = [n.name for n in nodes if n.reachable == reachable]
        if not names:
            continue
        records = await asyncio.to_thread(catalog.sandboxes_on, names, caller.scope, labels)
        for record in records:
            sandbox = SandboxPublic.model_validate(record)
            found.append(sandbox if reachable else sandbox.model_copy(
                update={"state": SandboxState.LOST}))  # fmt: skip
    return found


async def other_snapshots(
    state: ServerState, caller: Caller, here: Collection[str]
) -> list[SnapshotPublic]:
    """The caller's snapshots that only the cluster's other nodes hold (not those in
    ``here``, this node's); none off a cluster."""
    if (found_nodes := await _others(state)) is None:
        return []
    catalog, nodes = found_nodes
    if not nodes:
        return []
    names = [n.name for n in nodes]
    records = await asyncio.to_thread(catalog.snapshots_on, names, caller.scope)
    return [SnapshotPublic.model_validate(r) for r in records if r["id"] not in here]

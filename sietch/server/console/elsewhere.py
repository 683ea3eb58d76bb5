"""On a cluster node, the console's list shows the whole cluster: this node's sandboxes
live, the other nodes' as their nodes last reported them to the catalog (``lost`` while
their node is unreachable), so that a console behind a gateway lists every sandbox of the
login's tenant. Their pages and actions go to their own nodes: the gateway routes each
``/ui/sandboxes/{id}/...`` by the id in its path."""

from __future__ import annotations

import asyncio

from sietch.cluster.tenants import ClusterTenants
from sietch.core.models import SandboxState
from sietch.core.tenants import Caller
from sietch.server.schemas import SandboxPublic
from sietch.server.state import ServerState


async def other_nodes(
    state: ServerState, caller: Caller, labels: dict[str, str]
) -> list[SandboxPublic]:
    """The caller's sandboxes on the cluster's other nodes; none off a cluster."""
    if not isinstance(state.tenants, ClusterTenants):
        return []
    catalog = state.tenants.catalog
    nodes = [
        n for n in await asyncio.to_thread(catalog.nodes) if n.name != state.settings.node_name
    ]
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

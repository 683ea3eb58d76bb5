"""What a gateway has nodes copy between themselves: a snapshot before a restore on a node
that lacks it, a user image before a create there, a hibernated sandbox before it
resumes on another node. The gateway only asks; the bytes go node to node (a node's
internal routes, :mod:`sietch.server.routes.internal`, behind the cluster secret, each
file checked against its SHA-256 on arrival: :mod:`sietch.core.transfer`).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from sietch.cluster.catalog import NodeRecord
from sietch.cluster.wire import SECRET_HEADER
from sietch.errors import BadGateway
from sietch.server.gateway.forwarding import unreachable

log = logging.getLogger(__name__)


class Copier:
    """Node-to-node copies, asked for over the gateway's HTTP client."""

    def __init__(self, http: httpx.AsyncClient, secret: str) -> None:
        self.http = http
        self.secret = secret

    async def _ask(self, target: NodeRecord, path: str, body: dict[str, Any], what: str) -> Any:
        try:
            answer = await self.http.post(
                f"{target.url}/internal/{path}", json=body, headers={SECRET_HEADER: self.secret}
            )
        except httpx.TransportError as exc:
            raise unreachable(target.name, "it", exc) from None
        if answer.status_code != 200:
            raise BadGateway(f"{what} failed: {answer.text[:500]}")
        return answer.json()

    async def snapshot(self, snapshot_id: str, source: NodeRecord, target: NodeRecord) -> None:
        """``target`` fetches the snapshot from ``source``."""
        log.info("copying snapshot %s from node %s to %s", snapshot_id, source.name, target.name)
        what = f"copying snapshot {snapshot_id} from node {source.name} to {target.name}"
        await self._ask(target, f"snapshots/{snapshot_id}/fetch", {"source": source.url}, what)

    async def image(self, name: str, source: NodeRecord, target: NodeRecord) -> None:
        """``target`` fetches user image ``name`` (its record and disk layers) from
        ``source``: built once, copied where it is used."""
        log.info("copying image %s from node %s to %s", name, source.name, target.name)
        what = f"copying image {name} from node {source.name} to {target.name}"
        await self._ask(target, f"images/{name}/fetch", {"source": source.url}, what)

    async def move(self, sandbox_id: str, source: NodeRecord, target: NodeRecord) -> None:
        """Move a hibernated sandbox: ``target`` takes its record and hibernation snapshot
        (same id), then ``source`` lets it go."""
        log.info("moving hibernated %s from node %s to %s", sandbox_id, source.name, target.name)
        what = f"moving sandbox {sandbox_id} from node {source.name} to {target.name}"
        await self._ask(target, f"sandboxes/{sandbox_id}/move-in", {"source": source.url}, what)
        await self._ask(source, f"sandboxes/{sandbox_id}/move-out", {}, what)

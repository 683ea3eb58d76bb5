"""Which node a gateway sends a request to: pure logic over the request's method, path and
headers (no I/O), so every route of the public API, Sietch's, E2B's and Arrakis', is
covered by a few rules instead of a table that drifts from the node's routes.

- A request that names a sandbox (a ``sb-…`` path segment, E2B's ``E2b-Sandbox-Id``
  header, a ``{port}-{id}.{proxy_domain}`` or ``ide-{id}.{proxy_domain}`` host) goes to
  the sandbox's node; one that names an Arrakis VM (``/v1/vms/{name}``) to the node of
  the sandbox with that name.
- One that names a snapshot (``snap-…``) goes to a node holding it; a restore may first
  have it copied elsewhere (:mod:`.app`).
- A create is placed (:mod:`sietch.cluster.placement`); a listing asks every node and
  merges their answers; what names nothing goes to any reachable node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SANDBOX_ID = re.compile(r"sb-[0-9a-f]{12}")
SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]{12}")
_HOSTED = re.compile(r"(\d+|ide)-(sb-[0-9a-f]{12})\.")

CREATES = frozenset({"/api/v1/sandboxes", "/sandboxes", "/v2/sandboxes", "/v1/vms"})
LISTS = frozenset(
    {
        "/api/v1/sandboxes",
        "/api/v1/snapshots",
        "/sandboxes",
        "/v2/sandboxes",
        "/v1/vms",
        "/snapshots",
    }
)
EVERY_NODE = frozenset({("DELETE", "/v1/vms")})
"""Requests that act on every node's sandboxes (Arrakis' destroy-all)."""
RESTORE = re.compile(r"/api/v1/snapshots/(snap-[0-9a-f]{12})/restore")

Kind = Literal["sandbox", "snapshot", "vm", "create", "restore", "list", "every", "any"]


@dataclass(frozen=True)
class Target:
    kind: Kind
    key: str | None = None
    """The sandbox id, snapshot id or VM name."""
    by_header: bool = False
    """Named by E2B's sandbox header (E2B words "not found" its own way)."""


def classify(method: str, path: str, headers: dict[str, str], proxy_domain: str | None) -> Target:
    """Where the request goes; ``headers`` lower-cased names."""
    if sandbox := headers.get("e2b-sandbox-id"):
        return Target("sandbox", sandbox, by_header=True)
    host = headers.get("host", "")
    if proxy_domain and host.endswith("." + proxy_domain) and (m := _HOSTED.match(host)):
        return Target("sandbox", m.group(2))
    path = path.rstrip("/") or "/"
    if method == "POST" and (m := RESTORE.fullmatch(path)):
        return Target("restore", m.group(1))
    segments = path.split("/")
    for segment in segments:
        if SANDBOX_ID.fullmatch(segment):
            return Target("sandbox", segment)
    for segment in segments:
        if SNAPSHOT_ID.fullmatch(segment):
            return Target("snapshot", segment)
    if path.startswith("/v1/vms/"):
        return Target("vm", segments[3])
    if method == "POST" and path in CREATES:
        return Target("create")
    if method == "GET" and path in LISTS:
        return Target("list")
    if (method, path) in EVERY_NODE:
        return Target("every")
    return Target("any")

"""Which node a gateway sends a request to: pure logic over the request's method, path and
headers (no I/O), so every route of the public API, Sietch's, E2B's and Arrakis', is
covered by a few rules instead of a table that drifts from the node's routes.

- A request that names a sandbox (a ``sb-…`` path segment, E2B's ``E2b-Sandbox-Id``
  header, a ``{port}-{id}.{proxy_domain}`` or ``ide-{id}.{proxy_domain}`` host) goes to
  the sandbox's node; one that names an Arrakis VM (``/v1/vms/{name}``) to the node of
  the sandbox with that name.
- One that names a snapshot (``snap-…``) or a user image goes to a node holding it (a
  delete to every one); a restore may first have the snapshot copied elsewhere
  (:mod:`.app`).
- A create or a restore (the console's forms too) is placed (:mod:`sietch.cluster.placement`), on a
  node holding its user image or one that copies it first; the console's "Delete
  selected" goes to each selected sandbox's node; a fork is counted against the
  cluster's quotas; a resume may move a hibernated sandbox (:mod:`.app`); a listing asks
  every node and merges their answers; what names nothing goes to any reachable node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

SANDBOX_ID = re.compile(r"sb-[0-9a-f]{12}")
SNAPSHOT_ID = re.compile(r"snap-[0-9a-f]{12}")
_HOSTED = re.compile(r"(\d+|ide)-(sb-[0-9a-f]{12})\.")

CONSOLE = "/ui/"
"""The web console's paths: signed in with a cookie, not a key (:meth:`.app.Gateway.caller`)."""
CREATES = frozenset(
    {"/api/v1/sandboxes", "/sandboxes", "/v2/sandboxes", "/v1/vms", "/ui/sandboxes"}
)
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
RESTORE = re.compile(r"/api/v1/snapshots/(snap-[0-9a-f]{12})/restore")
CONSOLE_RESTORE = re.compile(r"/ui/snapshots/(snap-[0-9a-f]{12})/(?:restore|fork)")
"""The console's restore and fork (N restores) of a snapshot: placed as the API's."""
FORK = re.compile(r"/api/v1/sandboxes/(sb-[0-9a-f]{12})/fork")
RESUME = re.compile(r"/api/v1/sandboxes/(sb-[0-9a-f]{12})/resume")
RECORD = re.compile(r"(?:/api/v1)?/sandboxes/sb-[0-9a-f]{12}")
"""A sandbox's record (Sietch's, E2B's): a read of it changes nothing."""
IMAGE = re.compile(r"/api/v1/images/([a-z0-9][a-z0-9._:-]*)")
IMAGE_FIELDS = {
    "/api/v1/sandboxes": "image",
    "/sandboxes": "templateID",
    "/v1/vms": "rootfs",
    "/ui/sandboxes": "image",
}
"""Where each API's create names its image (Sietch's, E2B's, Arrakis', the console's form)."""

_NAMED: tuple[tuple[frozenset[str], re.Pattern[str], str], ...] = (
    (frozenset({"POST"}), RESTORE, "restore"),
    (frozenset({"POST"}), CONSOLE_RESTORE, "restore"),
    # More than a forward: a fork counts against the cluster's quotas, a hibernated
    # sandbox may wake on another node when its own is full.
    (frozenset({"POST"}), FORK, "fork"),
    (frozenset({"POST"}), RESUME, "resume"),
    # A user image's record or removal: on the nodes holding it.
    (frozenset({"GET", "DELETE"}), IMAGE, "image"),
)
"""Paths that name what they act on and need more than a forward to its node."""

Kind = Literal[
    "sandbox",
    "snapshot",
    "image",
    "vm",
    "create",
    "restore",
    "fork",
    "resume",
    "list",
    "every",
    "delete_many",
    "any",
]


_FIXED: dict[tuple[str, str], Kind] = {
    # Arrakis' destroy-all: every node's sandboxes.
    ("DELETE", "/v1/vms"): "every",
    # The console's "Delete selected": sandbox ids in its form, on any nodes.
    ("POST", "/ui/sandboxes/delete"): "delete_many",
}


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
    for methods, pattern, kind in _NAMED:
        if method in methods and (m := pattern.fullmatch(path)):
            return Target(cast(Kind, kind), m.group(1))
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
    return Target(_FIXED.get((method, path), "any"))


def image_of(path: str, fields: dict[str, object]) -> str | None:
    """The image a create's body names, if it names one."""
    image = fields.get(IMAGE_FIELDS.get(path.rstrip("/"), ""))
    return image if isinstance(image, str) and image else None

"""The SDK for code running on a Ray node: sandboxes on this node first."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import ray

from sietch.client import Client, Sandbox, SandboxInfo
from sietch.ray._cluster import GATEWAY, NAMESPACE, actor_name
from sietch.ray._server import node_name

LOOKUP_TIMEOUT_S = 120.0
"""How long to wait for a gateway that Ray is restarting."""


def local_node() -> str:
    """The Sietch node name of the Ray node this code runs on (``prefer_node``)."""
    return node_name(ray.get_runtime_context().get_node_id())


def gateway_url() -> str:
    """The URL of the gateway :func:`sietch.ray.start` runs (in any job of the cluster)."""
    gateway = ray.get_actor(GATEWAY, namespace=NAMESPACE)
    return str(ray.get(gateway.ready.remote(LOOKUP_TIMEOUT_S)))


def _has_server(node_id: str) -> bool:
    try:
        ray.get_actor(actor_name(node_id), namespace=NAMESPACE)
    except ValueError:  # a Ray node that joined after start(), or whose server was stopped
        return False
    return True


class Sandboxes:
    """Sietch's SDK against the cluster's gateway, creating sandboxes on the caller's own
    Ray node when it has room and on any other otherwise (the gateway's placement), or
    anywhere when this Ray node runs no Sietch node (``node`` is None then).

    For a trainer's task or actor: ``with Sandboxes() as sandboxes, sandboxes.create() as
    sb: sb.exec(...)``. ``api_key``: default ``SIETCH_API_KEY``, as for the SDK.
    """

    def __init__(self, api_key: str | None = None, **client_options: Any) -> None:
        node_id = ray.get_runtime_context().get_node_id()
        self.node = node_name(node_id) if _has_server(node_id) else None
        self.client = Client(gateway_url(), api_key, **client_options)

    def create(self, image: str | None = None, **spec: Any) -> Sandbox:
        """:meth:`sietch.Sandbox.create`, on this node first (``prefer_node`` overrides)."""
        spec.setdefault("prefer_node", self.node)
        return Sandbox.create(image, client=self.client, **spec)

    def connect(self, sandbox_id: str) -> Sandbox:
        return Sandbox.connect(sandbox_id, client=self.client)

    def list(self, labels: Mapping[str, str] | None = None) -> builtins.list[SandboxInfo]:
        return Sandbox.list(labels, client=self.client)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Sandboxes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

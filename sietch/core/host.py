"""What snapshots, templates and the warm pool need of the manager, and all they get."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from sietch.config import Settings
from sietch.core.desktop import Desktops
from sietch.core.live import LiveSandbox
from sietch.core.models import SandboxInfo, Timeouts
from sietch.core.store import Store
from sietch.network.policy import NetworkPolicy


class SandboxHost(Protocol):
    """Implemented by :class:`sietch.core.manager.Manager`."""

    @property
    def settings(self) -> Settings: ...

    @property
    def accel(self) -> str: ...

    @property
    def run_as(self) -> tuple[int, int] | None:
        """The unprivileged user QEMU runs as (None: our own)."""

    @property
    def store(self) -> Store: ...

    @property
    def desktops(self) -> Desktops: ...

    def default_network(self) -> NetworkPolicy: ...

    def live(self, sandbox_id: str) -> LiveSandbox | None:
        """The live sandbox (running or paused), without taking its lock."""

    async def restore(self, snapshot_id: str, **options: Any) -> SandboxInfo: ...

    async def destroy(self, sandbox_id: str) -> None:
        """Stop the sandbox (if live) and remove its files and record."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background until it ends or the manager closes."""

    def set_timeouts(self, info: SandboxInfo, timeouts: Timeouts) -> None:
        """Give a sandbox handed out now these timeouts (``timeout_s`` counts from now)."""

"""Where the MCP tools get their work done: the :class:`Backend` both front doors implement.

``sietch mcp`` (stdio, started by an agent's host) talks to a running server
through the public SDK (:class:`sietch.mcp.sdk.ClientBackend`): that process
owns no VMs, so several agents can share one server and its sandboxes, and a
crashed MCP process leaves nothing behind. Mounted in ``sietch serve``
(``/mcp``) the tools call the manager of that process directly
(:class:`sietch.server.mcp.ManagerBackend`): no loopback HTTP hop, no key to
hand to ourselves. Neither the tools nor this module import either side.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from sietch.errors import PayloadTooLarge
from sietch.mcp.models import (
    READ_LIMIT,
    CodeRun,
    CommandResult,
    DesktopOut,
    DirEntry,
    FileWritten,
    NetworkOut,
    PortOut,
    SandboxOut,
    SnapshotOut,
)

TimeoutAction = Literal["kill", "pause", "hibernate"]

MCP_LABEL = {"created_by": "mcp"}
"""Marks sandboxes an agent made over MCP, so people can find (and reap) them."""


class Backend(Protocol):
    """The operations behind the tools; errors are :class:`sietch.errors.SietchError`.

    ``internet`` None and ``allow`` empty at create leave the server's default policy;
    the backend's side validates (and normalises) the ``allow`` entries.
    """

    async def create(
        self, image: str | None, timeout_s: float | None, internet: bool | None, allow: list[str]
    ) -> SandboxOut: ...
    async def sandboxes(self) -> list[SandboxOut]: ...
    async def run(
        self, sandbox_id: str, command: str, timeout_s: float, cwd: str | None
    ) -> CommandResult: ...
    async def run_code(
        self, sandbox_id: str, code: str, context_id: str | None, timeout_s: float
    ) -> CodeRun: ...
    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> FileWritten: ...
    async def read_file(self, sandbox_id: str, path: str) -> bytes: ...
    async def list_dir(self, sandbox_id: str, path: str, depth: int) -> list[DirEntry]: ...
    async def snapshot(self, sandbox_id: str, name: str | None) -> SnapshotOut: ...
    async def restore(self, snapshot_id: str) -> SandboxOut: ...
    async def fork(self, sandbox_id: str, count: int) -> list[SandboxOut]: ...
    async def snapshots(self) -> list[SnapshotOut]: ...
    async def destroy(self, sandbox_id: str) -> None: ...
    async def expose(self, sandbox_id: str, port: int) -> PortOut: ...
    async def desktop_url(
        self, sandbox_id: str, view_only: bool, ttl_s: float | None
    ) -> DesktopOut: ...
    async def set_network(
        self, sandbox_id: str, internet: bool, allow: list[str]
    ) -> NetworkOut: ...
    async def hibernate(self, sandbox_id: str) -> SandboxOut: ...
    async def set_timeout(
        self, sandbox_id: str, timeout_s: float | None, on_timeout: TimeoutAction
    ) -> SandboxOut: ...

    async def screenshot(self, sandbox_id: str, scale: float | None) -> bytes:
        """A desktop sandbox's screen as PNG."""

    async def computer(self, sandbox_id: str, action: dict[str, Any]) -> dict[str, Any]:
        """One of Sietch's computer-use actions (``{"action": "click", ...}``); its answer."""


def too_large(path: str) -> PayloadTooLarge:
    """What ``read_file`` says about a file over :data:`~sietch.mcp.models.READ_LIMIT`."""
    return PayloadTooLarge(
        f"{path} is larger than {READ_LIMIT} bytes: read a part of it with run_command "
        "(head, tail, grep)"
    )


def snapshot_out(
    snapshot_id: str,
    name: str | None,
    sandbox_id: str | None,
    parent_id: str | None,
    created: object,
) -> SnapshotOut:
    return SnapshotOut(
        snapshot_id=snapshot_id,
        name=name,
        sandbox_id=sandbox_id,
        parent_id=parent_id,
        created_at=str(created),
    )

"""``sietch mcp``'s side: the tools over a running server, through the public SDK.

Reads ``SIETCH_URL`` and ``SIETCH_API_KEY`` like every other client; imports
nothing of the server, the manager or the VMs (see :mod:`sietch.mcp.backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sietch.client import AsyncClient, AsyncSandbox
from sietch.errors import SietchError
from sietch.mcp.backend import MCP_LABEL, TimeoutAction, snapshot_out, too_large
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
    capped,
    port_out,
)
from sietch.mcp.server import build_server


class ClientBackend:
    """A server through the public SDK (``SIETCH_URL``, ``SIETCH_API_KEY``)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._handles: dict[str, AsyncSandbox] = {}

    async def _sandbox(self, sandbox_id: str) -> AsyncSandbox:
        if (handle := self._handles.get(sandbox_id)) is None:
            handle = await AsyncSandbox.connect(sandbox_id, client=self.client)
            self._handles[sandbox_id] = handle
        return handle

    def _keep(self, sandbox: AsyncSandbox) -> SandboxOut:
        self._handles[sandbox.id] = sandbox
        info = sandbox.info
        return SandboxOut(
            sandbox_id=info.id,
            state=info.state,
            image=info.image,
            restored_from=info.snapshot_id,
            expires_at=str(info.expires_at) if info.expires_at else None,
        )

    async def create(
        self, image: str | None, timeout_s: float | None, internet: bool | None, allow: list[str]
    ) -> SandboxOut:
        sandbox = await AsyncSandbox.create(
            image,
            timeout_s=timeout_s,
            labels=MCP_LABEL,
            internet=internet,
            allow=allow or None,
            keep=True,
            client=self.client,
        )
        return self._keep(sandbox)

    async def sandboxes(self) -> list[SandboxOut]:
        return [
            SandboxOut(sandbox_id=i.id, state=i.state, image=i.image, restored_from=i.snapshot_id)
            for i in await AsyncSandbox.list(client=self.client)
        ]

    async def run(
        self, sandbox_id: str, command: str, timeout_s: float, cwd: str | None
    ) -> CommandResult:
        sandbox = await self._sandbox(sandbox_id)
        result = await sandbox.exec(command, timeout=timeout_s, cwd=cwd)
        stdout, cut_out = capped(result.stdout_bytes)
        stderr, cut_err = capped(result.stderr_bytes)
        return CommandResult(
            exit_code=result.exit_code,
            stdout=stdout,
            stderr=stderr,
            timed_out=result.timed_out,
            truncated=cut_out or cut_err or result.truncated,
        )

    async def run_code(
        self, sandbox_id: str, code: str, context_id: str | None, timeout_s: float
    ) -> CodeRun:
        sandbox = await self._sandbox(sandbox_id)
        done = await sandbox.run_code(code, context_id, timeout=timeout_s)
        return CodeRun(
            stdout=done.stdout,
            stderr=done.stderr,
            result=done.text,
            error=None
            if done.error is None
            else done.error.traceback or f"{done.error.name}: {done.error.value}",
            execution_count=done.execution_count,
            images=[r.png for r in done.results if r.png is not None],
        )

    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> FileWritten:
        written = await (await self._sandbox(sandbox_id)).files.write(path, content)
        return FileWritten(path=path, size=written.size)

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        data = bytearray()
        async for chunk in (await self._sandbox(sandbox_id)).files.iter_bytes(path):
            data += chunk
            if len(data) > READ_LIMIT:
                raise too_large(path)
        return bytes(data)

    async def list_dir(self, sandbox_id: str, path: str, depth: int) -> list[DirEntry]:
        entries = await (await self._sandbox(sandbox_id)).files.list(path, depth=depth)
        return [DirEntry(name=e.name, path=e.path, type=e.type, size=e.size) for e in entries]

    async def snapshot(self, sandbox_id: str, name: str | None) -> SnapshotOut:
        snap = await (await self._sandbox(sandbox_id)).snapshot(name, labels=MCP_LABEL)
        return snapshot_out(snap.id, snap.name, snap.sandbox_id, snap.parent_id, snap.created_at)

    async def restore(self, snapshot_id: str) -> SandboxOut:
        sandbox = await AsyncSandbox.restore(
            snapshot_id, labels=MCP_LABEL, keep=True, client=self.client
        )
        return self._keep(sandbox)

    async def fork(self, sandbox_id: str, count: int) -> list[SandboxOut]:
        forks = await (await self._sandbox(sandbox_id)).fork(count, labels=MCP_LABEL)
        return [self._keep(f) for f in forks]

    async def snapshots(self) -> list[SnapshotOut]:
        return [
            snapshot_out(s.id, s.name, s.sandbox_id, s.parent_id, s.created_at)
            for s in await AsyncSandbox.list_snapshots(client=self.client)
        ]

    async def destroy(self, sandbox_id: str) -> None:
        sandbox = await self._sandbox(sandbox_id)
        self._handles.pop(sandbox_id, None)
        await sandbox.kill()

    async def expose(self, sandbox_id: str, port: int) -> PortOut:
        m = await (await self._sandbox(sandbox_id)).expose(port)
        return port_out(sandbox_id, m.guest_port, m.host, m.host_port)

    async def desktop_url(
        self, sandbox_id: str, view_only: bool, ttl_s: float | None
    ) -> DesktopOut:
        view = await (await self._sandbox(sandbox_id)).desktop.url(view_only=view_only, ttl=ttl_s)
        return DesktopOut(sandbox_id=sandbox_id, **view.model_dump(exclude={"vnc_password"}))

    async def hibernate(self, sandbox_id: str) -> SandboxOut:
        sandbox = await self._sandbox(sandbox_id)
        await sandbox.hibernate()
        return self._keep(sandbox)

    async def set_timeout(
        self, sandbox_id: str, timeout_s: float | None, on_timeout: TimeoutAction
    ) -> SandboxOut:
        sandbox = await self._sandbox(sandbox_id)
        await sandbox.set_timeout(timeout_s, on_timeout=on_timeout)
        return self._keep(sandbox)

    async def set_network(self, sandbox_id: str, internet: bool, allow: list[str]) -> NetworkOut:
        sandbox = await self._sandbox(sandbox_id)
        applied = await sandbox.set_network(internet=internet, allow=allow)
        return NetworkOut(sandbox_id=sandbox_id, internet=applied.internet, allow=applied.allow)

    async def screenshot(self, sandbox_id: str, scale: float | None) -> bytes:
        return await (await self._sandbox(sandbox_id)).desktop.screenshot(scale=scale)

    async def computer(self, sandbox_id: str, action: dict[str, Any]) -> dict[str, Any]:
        fields = dict(action)
        name = fields.pop("action")
        return await (await self._sandbox(sandbox_id)).desktop.act(name, **fields)


async def serve_stdio(url: str | None, api_key: str | None, warn: Callable[[str], None]) -> None:
    """Serve the tools on stdin/stdout until the agent's host closes them.

    ``warn`` gets a line for stderr when the server does not answer at the start.
    """
    # No client-side timeout: run_command bounds each command by its own timeout_s.
    async with AsyncClient(url, api_key, timeout=None) as client:
        try:
            await client.health()
        except SietchError as exc:
            # Still serve: the agent's host shows tool errors, and the server may come up later.
            warn(f"{client.config.url}: {exc.message}")
        await build_server(ClientBackend(client)).run_stdio_async()

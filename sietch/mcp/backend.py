"""Where the MCP tools get their work done: the manager, or a server through the SDK.

Mounted in ``sietch serve`` (``/mcp``) the tools call the manager of that
process directly: no loopback HTTP hop, no key to hand to ourselves. Run as
``sietch mcp`` (stdio, started by an agent's host) they talk to a running
server through the public SDK, as every other client does: that process owns
no VMs, so several agents can share one server and its sandboxes, and a
crashed MCP process leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sietch.client import AsyncClient, AsyncSandbox
from sietch.core.manager import Manager
from sietch.errors import PayloadTooLarge
from sietch.mcp.models import (
    OUTPUT_LIMIT,
    READ_LIMIT,
    CommandOut,
    DirEntry,
    FileWritten,
    NetworkOut,
    PortOut,
    SandboxOut,
    SnapshotOut,
    capped,
    port_out,
)
from sietch.network.policy import NetworkPolicy

MCP_LABEL = {"created_by": "mcp"}
"""Marks sandboxes an agent made over MCP, so people can find (and reap) them."""


class Backend(Protocol):
    """The operations behind the tools; errors are :class:`sietch.errors.SietchError`."""

    async def create(
        self, image: str | None, timeout_s: float | None, network: NetworkPolicy | None
    ) -> SandboxOut: ...
    async def sandboxes(self) -> list[SandboxOut]: ...
    async def run(
        self, sandbox_id: str, command: str, timeout_s: float, cwd: str | None
    ) -> CommandOut: ...
    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> FileWritten: ...
    async def read_file(self, sandbox_id: str, path: str) -> bytes: ...
    async def list_dir(self, sandbox_id: str, path: str, depth: int) -> list[DirEntry]: ...
    async def snapshot(self, sandbox_id: str, name: str | None) -> SnapshotOut: ...
    async def restore(self, snapshot_id: str) -> SandboxOut: ...
    async def fork(self, sandbox_id: str, count: int) -> list[SandboxOut]: ...
    async def snapshots(self) -> list[SnapshotOut]: ...
    async def destroy(self, sandbox_id: str) -> None: ...
    async def expose(self, sandbox_id: str, port: int) -> PortOut: ...
    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> NetworkOut: ...


class _Capped:
    """Keeps one byte more than :data:`OUTPUT_LIMIT`, so :func:`capped` sees the cut."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.dropped = False

    def __call__(self, chunk: bytes) -> None:
        room = OUTPUT_LIMIT + 1 - len(self.data)
        self.dropped |= len(chunk) > room
        self.data += chunk[: max(room, 0)]


def _too_large(path: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{path} is larger than {READ_LIMIT} bytes: read a part of it with run_command "
        "(head, tail, grep)"
    )


class ManagerBackend:
    """In the server process: the manager itself (fetched per call: it lives in the lifespan)."""

    def __init__(self, manager: Callable[[], Manager]) -> None:
        self._manager = manager

    async def create(
        self, image: str | None, timeout_s: float | None, network: NetworkPolicy | None
    ) -> SandboxOut:
        info = await self._manager().create(
            image=image, timeout_s=timeout_s, metadata=MCP_LABEL, network=network
        )
        return SandboxOut(sandbox_id=info.id, state=info.state.value, image=info.image)

    async def sandboxes(self) -> list[SandboxOut]:
        return [
            SandboxOut(
                sandbox_id=i.id, state=i.state.value, image=i.image, restored_from=i.snapshot_id
            )
            for i in await self._manager().list()
        ]

    async def run(
        self, sandbox_id: str, command: str, timeout_s: float, cwd: str | None
    ) -> CommandOut:
        out, err = _Capped(), _Capped()
        async with self._manager().use(sandbox_id) as sandbox:
            execution = await sandbox.start(command, cwd=cwd, timeout=timeout_s)
            try:
                result = await execution.result(on_stdout=out, on_stderr=err, capture=False)
            finally:
                await execution.close()
        stdout, cut_out = capped(bytes(out.data))
        stderr, cut_err = capped(bytes(err.data))
        return CommandOut(
            exit_code=result.exit_code,
            stdout=stdout,
            stderr=stderr,
            timed_out=result.timed_out,
            truncated=cut_out or cut_err or out.dropped or err.dropped,
        )

    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> FileWritten:
        async with self._manager().use(sandbox_id) as sandbox:
            size = await sandbox.write_file(path, content)
        return FileWritten(path=path, size=size)

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        data = bytearray()
        async with self._manager().use(sandbox_id) as sandbox:
            async for chunk in sandbox.read_file(path):
                data += chunk
                if len(data) > READ_LIMIT:
                    raise _too_large(path)
        return bytes(data)

    async def list_dir(self, sandbox_id: str, path: str, depth: int) -> list[DirEntry]:
        async with self._manager().use(sandbox_id) as sandbox:
            entries = await sandbox.list_dir(path, depth)
        return [DirEntry(name=e.name, path=e.path, type=e.type, size=e.size) for e in entries]

    async def snapshot(self, sandbox_id: str, name: str | None) -> SnapshotOut:
        snap = await self._manager().snapshot(sandbox_id, name, {**MCP_LABEL})
        return _snapshot_out(snap.id, snap.name, snap.sandbox_id, snap.parent_id, snap.created_at)

    async def restore(self, snapshot_id: str) -> SandboxOut:
        info = await self._manager().restore(snapshot_id, metadata=MCP_LABEL)
        return SandboxOut(
            sandbox_id=info.id, state=info.state.value, image=info.image, restored_from=snapshot_id
        )

    async def fork(self, sandbox_id: str, count: int) -> list[SandboxOut]:
        infos = await self._manager().fork(sandbox_id, count, MCP_LABEL)
        return [
            SandboxOut(
                sandbox_id=i.id, state=i.state.value, image=i.image, restored_from=i.snapshot_id
            )
            for i in infos
        ]

    async def snapshots(self) -> list[SnapshotOut]:
        return [
            _snapshot_out(s.id, s.name, s.sandbox_id, s.parent_id, s.created_at)
            for s in await self._manager().list_snapshots()
        ]

    async def destroy(self, sandbox_id: str) -> None:
        await self._manager().delete(sandbox_id)

    async def expose(self, sandbox_id: str, port: int) -> PortOut:
        m = await self._manager().expose(sandbox_id, port)
        return port_out(sandbox_id, m.guest_port, m.host, m.host_port)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> NetworkOut:
        info = await self._manager().set_network(sandbox_id, policy)
        return NetworkOut(
            sandbox_id=sandbox_id, internet=info.network.internet, allow=info.network.allow
        )


class ClientBackend:
    """Anywhere else: a server through the public SDK (``SIETCH_URL``, ``SIETCH_API_KEY``)."""

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
            sandbox_id=info.id, state=info.state, image=info.image, restored_from=info.snapshot_id
        )

    async def create(
        self, image: str | None, timeout_s: float | None, network: NetworkPolicy | None
    ) -> SandboxOut:
        sandbox = await AsyncSandbox.create(
            image,
            timeout_s=timeout_s,
            labels=MCP_LABEL,
            internet=network.internet if network else None,
            allow=network.allow if network else None,
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
    ) -> CommandOut:
        sandbox = await self._sandbox(sandbox_id)
        result = await sandbox.exec(command, timeout=timeout_s, cwd=cwd)
        stdout, cut_out = capped(result.stdout_bytes)
        stderr, cut_err = capped(result.stderr_bytes)
        return CommandOut(
            exit_code=result.exit_code,
            stdout=stdout,
            stderr=stderr,
            timed_out=result.timed_out,
            truncated=cut_out or cut_err or result.truncated,
        )

    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> FileWritten:
        written = await (await self._sandbox(sandbox_id)).files.write(path, content)
        return FileWritten(path=path, size=written.size)

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        data = bytearray()
        async for chunk in (await self._sandbox(sandbox_id)).files.iter_bytes(path):
            data += chunk
            if len(data) > READ_LIMIT:
                raise _too_large(path)
        return bytes(data)

    async def list_dir(self, sandbox_id: str, path: str, depth: int) -> list[DirEntry]:
        entries = await (await self._sandbox(sandbox_id)).files.list(path, depth=depth)
        return [DirEntry(name=e.name, path=e.path, type=e.type, size=e.size) for e in entries]

    async def snapshot(self, sandbox_id: str, name: str | None) -> SnapshotOut:
        snap = await (await self._sandbox(sandbox_id)).snapshot(name, labels=MCP_LABEL)
        return _snapshot_out(snap.id, snap.name, snap.sandbox_id, snap.parent_id, snap.created_at)

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
            _snapshot_out(s.id, s.name, s.sandbox_id, s.parent_id, s.created_at)
            for s in await AsyncSandbox.list_snapshots(client=self.client)
        ]

    async def destroy(self, sandbox_id: str) -> None:
        sandbox = await self._sandbox(sandbox_id)
        self._handles.pop(sandbox_id, None)
        await sandbox.kill()

    async def expose(self, sandbox_id: str, port: int) -> PortOut:
        m = await (await self._sandbox(sandbox_id)).expose(port)
        return port_out(sandbox_id, m.guest_port, m.host, m.host_port)

    async def set_network(self, sandbox_id: str, policy: NetworkPolicy) -> NetworkOut:
        sandbox = await self._sandbox(sandbox_id)
        applied = await sandbox.set_network(internet=policy.internet, allow=policy.allow)
        return NetworkOut(sandbox_id=sandbox_id, internet=applied.internet, allow=applied.allow)


def _snapshot_out(
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

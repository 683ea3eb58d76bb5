"""MCP over streamable HTTP at ``/mcp`` on the main server, with the server's API key.

The tools are :mod:`sietch.mcp`'s; here they act through this process's own
manager (:class:`ManagerBackend`). The SDK's session manager must run for the
app's whole life: :meth:`McpEndpoint.run` is entered from the app's lifespan.

The tools act for the caller of the HTTP request that carries the tool call:
the endpoint puts it in :data:`CALLER` and the MCP SDK hands each message to
its handler in the sender's context, so the backend sees only that caller's
tenant (another tenant's sandbox is "not found", as in the REST API).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sietch._util import Capped
from sietch.config import Settings
from sietch.core import interpreter
from sietch.core.computer import parse_action
from sietch.core.desktop import encode
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import SandboxInfo
from sietch.core.tenants import Caller
from sietch.errors import AuthenticationError, InvalidArgument, SietchError, describe_validation
from sietch.mcp.backend import MCP_LABEL, TimeoutAction, snapshot_out, too_large
from sietch.mcp.models import (
    OUTPUT_LIMIT,
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
from sietch.network.policy import NetworkPolicy
from sietch.server.deps import authenticate
from sietch.server.handlers import error_response
from sietch.server.routes.viewer import desktop_link
from sietch.server.state import ServerState

PATH = "/mcp"
CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("sietch_mcp_caller")


def own_url(settings: Settings) -> str:
    """This server's URL, for the links a tool hands out (the MCP request's own URL does
    not reach the tools); a wildcard address becomes loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.port}"


def _policy(internet: bool, allow: list[str]) -> NetworkPolicy:
    """The policy, its entries normalised; a bad entry is an error naming it."""
    try:
        return NetworkPolicy(internet=internet, allow=allow)
    except ValidationError as exc:
        raise InvalidArgument(describe_validation(exc.errors())) from None


def _out(info: SandboxInfo) -> SandboxOut:
    return SandboxOut(
        sandbox_id=info.id,
        state=info.state.value,
        image=info.image,
        restored_from=info.snapshot_id,
        expires_at=str(info.expires_at) if info.expires_at else None,
    )


class ManagerBackend:
    """In the server process: the manager itself (fetched per call: it lives in the lifespan)."""

    def __init__(self, manager: Callable[[], Manager], state: ServerState) -> None:
        self._manager = manager
        self._state = state

    @staticmethod
    def _caller() -> Caller:
        caller = CALLER.get(None)
        if caller is None:  # never: the endpoint sets it; refuse rather than see everything
            raise AuthenticationError("the MCP request carried no authenticated caller")
        return caller

    def _own(self, sandbox_id: str) -> Manager:
        """The manager, once the caller may see ``sandbox_id`` (else: not found)."""
        manager = self._manager()
        manager.check_tenant(sandbox_id, self._caller().scope)
        return manager

    @contextlib.asynccontextmanager
    async def _use(self, sandbox_id: str) -> AsyncIterator[LiveSandbox]:
        async with self._own(sandbox_id).use(sandbox_id) as sandbox:
            yield sandbox

    async def create(
        self, image: str | None, timeout_s: float | None, internet: bool | None, allow: list[str]
    ) -> SandboxOut:
        network: dict[str, Any] | None = None
        if internet is not None or allow:
            network = {"internet": True if internet is None else internet, "allow": allow}
        info = await self._manager().create(
            image=image,
            timeout_s=timeout_s,
            labels=MCP_LABEL,
            network=network,
            tenant=self._caller().tenant,
        )
        return SandboxOut(sandbox_id=info.id, state=info.state.value, image=info.image)

    async def sandboxes(self) -> list[SandboxOut]:
        return [
            SandboxOut(
                sandbox_id=i.id, state=i.state.value, image=i.image, restored_from=i.snapshot_id
            )
            for i in await self._manager().list(tenant=self._caller().scope)
        ]

    async def run(
        self, sandbox_id: str, command: str, timeout_s: float, cwd: str | None
    ) -> CommandResult:
        # One byte over the limit, so capped() sees the cut.
        out, err = Capped(OUTPUT_LIMIT + 1), Capped(OUTPUT_LIMIT + 1)
        async with self._use(sandbox_id) as sandbox:
            execution = await sandbox.start(command, cwd=cwd, timeout=timeout_s)
            try:
                result = await execution.result(on_stdout=out, on_stderr=err, capture=False)
            finally:
                await execution.close()
        stdout, cut_out = capped(bytes(out.data))
        stderr, cut_err = capped(bytes(err.data))
        return CommandResult(
            exit_code=result.exit_code,
            stdout=stdout,
            stderr=stderr,
            timed_out=result.timed_out,
            truncated=cut_out or cut_err or out.truncated or err.truncated,
        )

    async def run_code(
        self, sandbox_id: str, code: str, context_id: str | None, timeout_s: float
    ) -> CodeRun:
        manager = self._own(sandbox_id)
        run = CodeRun()
        lines = interpreter.run_code(
            manager,
            self._state.service_client,
            sandbox_id,
            code,
            context_id=context_id,
            timeout_s=timeout_s,
        )
        async for line in lines:
            run.add(line)
        return run

    async def write_file(self, sandbox_id: str, path: str, content: bytes) -> FileWritten:
        async with self._use(sandbox_id) as sandbox:
            size = await sandbox.write_file(path, content)
        return FileWritten(path=path, size=size)

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        data = bytearray()
        async with self._use(sandbox_id) as sandbox:
            async for chunk in sandbox.read_file(path):
                data += chunk
                if len(data) > READ_LIMIT:
                    raise too_large(path)
        return bytes(data)

    async def list_dir(self, sandbox_id: str, path: str, depth: int) -> list[DirEntry]:
        async with self._use(sandbox_id) as sandbox:
            entries = await sandbox.list_dir(path, depth)
        return [DirEntry(name=e.name, path=e.path, type=e.type, size=e.size) for e in entries]

    async def snapshot(self, sandbox_id: str, name: str | None) -> SnapshotOut:
        snap = await self._own(sandbox_id).snapshot(sandbox_id, name, {**MCP_LABEL})
        return snapshot_out(snap.id, snap.name, snap.sandbox_id, snap.parent_id, snap.created_at)

    async def hibernate(self, sandbox_id: str) -> SandboxOut:
        return _out(await self._manager().hibernate(sandbox_id))

    async def set_timeout(
        self, sandbox_id: str, timeout_s: float | None, on_timeout: TimeoutAction
    ) -> SandboxOut:
        info = await self._manager().set_timeout(
            sandbox_id, timeout_s=timeout_s, on_timeout=on_timeout
        )
        return _out(info)

    async def restore(self, snapshot_id: str) -> SandboxOut:
        manager, caller = self._manager(), self._caller()
        await manager.get_snapshot(snapshot_id, caller.scope)
        info = await manager.restore(snapshot_id, labels=MCP_LABEL, tenant=caller.tenant)
        return SandboxOut(
            sandbox_id=info.id, state=info.state.value, image=info.image, restored_from=snapshot_id
        )

    async def fork(self, sandbox_id: str, count: int) -> list[SandboxOut]:
        infos = await self._own(sandbox_id).fork(sandbox_id, count, MCP_LABEL)
        return [
            SandboxOut(
                sandbox_id=i.id, state=i.state.value, image=i.image, restored_from=i.snapshot_id
            )
            for i in infos
        ]

    async def snapshots(self) -> list[SnapshotOut]:
        return [
            snapshot_out(s.id, s.name, s.sandbox_id, s.parent_id, s.created_at)
            for s in await self._manager().list_snapshots(tenant=self._caller().scope)
        ]

    async def destroy(self, sandbox_id: str) -> None:
        await self._own(sandbox_id).delete(sandbox_id)

    async def expose(self, sandbox_id: str, port: int) -> PortOut:
        m = await self._own(sandbox_id).expose(sandbox_id, port)
        return port_out(sandbox_id, m.guest_port, m.host, m.host_port)

    async def desktop_url(
        self, sandbox_id: str, view_only: bool, ttl_s: float | None
    ) -> DesktopOut:
        state = self._state
        view = desktop_link(
            state, self._manager(), own_url(state.settings), sandbox_id, view_only, ttl_s
        )
        return DesktopOut(sandbox_id=sandbox_id, **view.model_dump(exclude={"vnc_password"}))

    async def set_network(self, sandbox_id: str, internet: bool, allow: list[str]) -> NetworkOut:
        info = await self._own(sandbox_id).set_network(sandbox_id, _policy(internet, allow))
        return NetworkOut(
            sandbox_id=sandbox_id, internet=info.network.internet, allow=info.network.allow
        )

    async def screenshot(self, sandbox_id: str, scale: float | None) -> bytes:
        manager = self._manager()
        async with manager.use(sandbox_id) as sandbox:
            return encode(await manager.desktops.screenshot(sandbox), scale=scale)

    async def computer(self, sandbox_id: str, action: dict[str, Any]) -> dict[str, Any]:
        parsed = parse_action(action)
        manager = self._manager()
        async with manager.use(sandbox_id) as sandbox:
            return await manager.desktops.act(sandbox, parsed)


class McpEndpoint:
    """The ASGI endpoint: checks the API key, then hands the request to the MCP SDK."""

    def __init__(self, manager: Callable[[], Manager], state: ServerState) -> None:
        self.server = build_server(ManagerBackend(manager, state))
        host = state.settings.host
        # The SDK guards a loopback server against DNS rebinding (Host/Origin checks).
        self._app: ASGIApp = self.server.streamable_http_app(streamable_http_path=PATH, host=host)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with self.server.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            caller = authenticate(HTTPConnection(scope))
        except SietchError as exc:
            await error_response(exc)(scope, receive, send)
            return
        token = CALLER.set(caller)
        try:
            await self._app(scope, receive, send)
        finally:
            CALLER.reset(token)

    def route(self) -> Route:
        """A route taking every method at exactly ``/mcp`` (a Mount would redirect to /mcp/)."""
        return Route(PATH, endpoint=self, include_in_schema=False)

"""A live sandbox: the one owner of its QEMU machine, agent connection and network."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sietch.agent import protocol
from sietch.agent.connection import AgentConnection, AgentStream, Output
from sietch.core.models import (
    CommandResult,
    FileInfo,
    PortMapping,
    ProcessInfo,
    SandboxInfo,
    SandboxState,
)
from sietch.core.rwlock import RWLock
from sietch.errors import AgentUnavailable, Conflict, InvalidArgument, NetworkError, SietchError
from sietch.network import ports as netports
from sietch.network import relay
from sietch.network.policy import NetworkPolicy
from sietch.network.relay import HOST
from sietch.network.sandbox import SandboxNetwork
from sietch.vmm import snapshot as vmsnap
from sietch.vmm.cgroups import Cgroup, Limits
from sietch.vmm.qemu import MachineConfig, QemuMachine, read_tail

log = logging.getLogger(__name__)

OutputCallback = Callable[[bytes], Any]


def refuse_egress(policy: NetworkPolicy) -> None:
    """Without a namespace (not root) a sandbox has no way out: a policy can't give one."""
    if policy.internet or policy.allow:
        raise NetworkError(
            "sandbox egress needs Sietch to run as root (it uses network namespaces)"
        )


def command_params(
    cmd: str | Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    user: str | int | None = None,
    timeout: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Agent parameters for a command: a string runs in a shell, a list is an argv."""
    params: dict[str, Any] = {"cmd": cmd} if isinstance(cmd, str) else {"argv": list(cmd)}
    if not isinstance(cmd, str) and not cmd:
        raise InvalidArgument("the command is empty")
    if isinstance(cmd, str) and not cmd.strip():
        raise InvalidArgument("the command is empty")
    if timeout is not None and timeout <= 0:
        raise InvalidArgument("timeout must be positive")
    for key, value in (("env", env), ("cwd", cwd), ("user", user), ("timeout", timeout)):
        if value is not None:
            params[key] = value
    params.update({k: v for k, v in extra.items() if v is not None})
    return params


class Execution:
    """A command started in a sandbox: its output as it comes, its stdin, its end."""

    def __init__(self, stream: AgentStream, pid: int) -> None:
        self._stream = stream
        self.pid = pid
        self.started = time.monotonic()

    def __aiter__(self) -> AsyncIterator[Output]:
        return self._outputs()

    async def _outputs(self) -> AsyncIterator[Output]:
        async for event in self._stream:
            if isinstance(event, Output):
                yield event

    async def send_stdin(self, data: bytes) -> None:
        await self._stream.send(data)

    async def close_stdin(self) -> None:
        await self._stream.send_eof()

    async def signal(self, sig: int | str) -> None:
        await self._stream.send_msg({"type": "signal", "signal": sig})

    async def resize(self, cols: int, rows: int) -> None:
        await self._stream.send_msg({"type": "resize", "cols": cols, "rows": rows})

    async def result(
        self,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        capture: bool = True,
    ) -> CommandResult:
        """Wait for the end, collecting (and/or handing out) the output."""
        out, err = bytearray(), bytearray()
        async for chunk in self:
            is_err = chunk.channel == protocol.CHANNEL_STDERR
            if capture:
                (err if is_err else out).extend(chunk.data)
            callback = on_stderr if is_err else on_stdout
            if callback is not None and inspect.isawaitable(ret := callback(chunk.data)):
                await ret  # an async callback (a WebSocket send) paces the output
        return self.ended(bytes(out), bytes(err))

    def ended(self, stdout: bytes = b"", stderr: bytes = b"") -> CommandResult:
        """How the command ended, once its output has been iterated to the end (raises the
        agent's error if the stream ended in one)."""
        final = self._stream.check()
        return CommandResult(
            exit_code=final.get("exit_code"),
            signal=final.get("signal"),
            timed_out=bool(final.get("timed_out")),
            stdout=stdout,
            stderr=stderr,
            pid=self.pid,
            duration_s=time.monotonic() - self.started,
        )

    async def close(self) -> None:
        await self._stream.close()


class LiveSandbox:
    """One sandbox's live parts: its QEMU machine, its agent connection and its network.

    The one owner of all three and the only place that launches, stops and
    detaches them: every way a sandbox ends (delete, expiry, a failed boot or
    adoption, the manager closing, a pool discard) goes through :meth:`stop`
    or :meth:`detach`, as every QEMU teardown goes through
    ``QemuMachine._post_shutdown``. The constructor starts nothing; stop and
    detach are idempotent.

    :attr:`lock` is taken shared by whatever drives the agent (commands, file
    transfers, processes) and exclusively by what stops or rewires the VM
    under them (snapshot, pause, resume, ports, network policy); the manager
    takes it, callers reach a sandbox through ``Manager.use``.
    """

    def __init__(
        self,
        info: SandboxInfo,
        config: MachineConfig,
        cgroup: tuple[Cgroup, Limits] | None = None,
        jail_dir: Path | None = None,
        relay_hooks: relay.RelayHooks | None = None,
    ) -> None:
        self.info = info
        self.workdir = config.workdir
        self.machine = QemuMachine(config)
        self.agent = AgentConnection(config.agent_socket, name=info.id)
        self.network: SandboxNetwork | None = None
        """None when Sietch can't isolate (not root): slirp ``restrict=on``, no egress."""
        self.cgroup: Cgroup | None = cgroup[0] if cgroup else None
        """Where its host processes run (None: no cgroups here)."""
        self.limits: Limits | None = cgroup[1] if cgroup else None
        self.jail_dir = jail_dir
        """Where jailed QEMUs' roots are mounted (each in its own namespace); None: no jail."""
        self.relay_hooks = relay_hooks
        """What its port relays hold per connection, and the listeners they take over."""
        self.lock = RWLock()
        self.log = logging.LoggerAdapter(log, {"sandbox": info.id})
        self._services: dict[int, relay.UnixRelay] = {}
        self._forwarding = asyncio.Lock()
        """Held while a QEMU forward is looked up or added: it is one per guest port."""
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        """Closes what others keep open to this sandbox (a desktop's VNC connection): run
        once, first, by :meth:`stop` and :meth:`detach`."""
        self._settling: asyncio.Task[None] | None = None
        """After a cold boot: the agent's ``ready``, which answers once it has started."""

    @property
    def id(self) -> str:
        return self.info.id

    async def launch(self, upstreams: list[str] | None) -> None:
        """Start QEMU inside the sandbox's own network, which is wired while QEMU starts.

        ``upstreams`` are the resolvers of its DNS; None means no namespace (not
        root), so the sandbox gets no way out at all. On failure nothing is left.
        """
        config = self.machine.config
        joins: list[str] = []
        """Joins the sandbox's cgroup before exec (QEMU, slirp4netns); see sietch.vmm.cgroups."""
        cgroup_fds: list[int] = []
        try:
            if self.cgroup is not None and self.limits is not None:
                self.cgroup.create(self.limits)
                joins = self.cgroup.prefix()
            if self.cgroup is not None and self.jail_dir is not None:
                cgroup_fds = self.cgroup.open_procs()  # a jailed QEMU has no /sys
                config.wrapper = self.cgroup.prefix_fds(cgroup_fds)
            else:
                config.wrapper = joins
            config.pass_fds = tuple(cgroup_fds)
            if upstreams is None:
                refuse_egress(self.info.network)
                self._jail(None)
                await self.machine.launch()
                return
            self.network = await SandboxNetwork.prepare(self.info.network, upstreams)
            config.restrict_net = False
            config.pass_fds = (*self.network.pass_fds(), *cgroup_fds)
            if self.jail_dir is None:
                config.wrapper = [*config.wrapper, *self.network.launch_prefix()]
            self._jail(self.network.namespace)
            results = await asyncio.gather(
                self.machine.launch(), self.network.connect(config.workdir / "uplink.log", joins),
                return_exceptions=True,
            )  # fmt: skip
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            self.network.launched()
        except BaseException:
            await self.stop()
            raise
        finally:
            for fd in cgroup_fds:
                os.close(fd)

    def _jail(self, netns: int | None) -> None:
        """Jailed, QEMU enters its network namespace from the launcher, not by nsenter."""
        if self.jail_dir is not None:
            self.machine.config.jail = self.machine.config.jail_view(self.jail_dir, netns)

    async def adopt(self, pid: int, upstreams: list[str] | None) -> None:
        """Take over the VM (and network) an earlier Sietch process left running.

        On failure the VM is killed: one we cannot drive is of no use to anyone.
        """
        try:
            self.machine = await QemuMachine.adopt(self.machine.config, pid)
            await self.agent.connect(timeout=10.0)
            if upstreams is not None:
                self.network = await SandboxNetwork.adopt(pid, self.info.network, upstreams)
                await self._reopen_relays()
        except BaseException:
            await self.stop()
            raise

    async def _reopen_relays(self) -> None:
        """The relays died with the old Sietch: the same host ports if still free."""
        assert self.network is not None
        inner = await netports.forwards(self.machine)
        for mapping in list(self.info.ports):
            if mapping.guest_port not in inner:
                self.info.ports.remove(mapping)
                continue
            mapping.host_port = await self._relay(inner[mapping.guest_port], mapping.host_port)

    async def forward(self, guest_port: int, host_port: int = 0) -> PortMapping:
        """QEMU forwards the guest port to its namespace's loopback; a relay brings it out
        (on ``host_port`` if that is free, else on any free port)."""
        async with self._forwarding:
            port = await netports.forward(self.machine, guest_port)
        if self.network is not None:
            try:
                port = await self._relay(port, host_port)
            except BaseException:
                await netports.unforward(self.machine, port)
                raise
        return PortMapping(guest_port=guest_port, host=HOST, host_port=port)

    async def service_socket(self, guest_port: int) -> Path:
        """A unix socket in the sandbox's directory that reaches ``guest_port``, for the
        server's own proxies (desktop viewer, IDE): no host port, and no entry in ``ports``.

        Each connection looks the QEMU forward up again (and makes it if missing),
        so an ``unexpose`` of the same port, or a restore into a new QEMU, breaks nothing.
        """
        async with self._forwarding:
            found = self._services.get(guest_port)
            if found is None:
                found = relay.UnixRelay(
                    self.workdir / f"service-{guest_port}.sock", lambda: self.connect(guest_port)
                )
                await found.start()
                self._services[guest_port] = found
        return found.path

    async def connect(self, guest_port: int) -> relay.Streams:
        """A TCP connection from Sietch to a guest port, for Sietch's own use (the desktop's
        VNC): QEMU forwards it inside the sandbox's namespace, and no host port opens."""
        async with self._forwarding:
            inner = await netports.forward(self.machine, guest_port)
        return await relay.connect(self.network.namespace if self.network else None, inner)

    async def _close_services(self) -> None:
        services, self._services = self._services, {}
        for service in services.values():
            await service.close()

    async def _relay(self, inner_port: int, host_port: int) -> int:
        assert self.network is not None
        if host_port:
            try:
                return await self.network.open_relay(inner_port, host_port, self.relay_hooks)
            except OSError:
                pass  # taken meanwhile: any free one
        return await self.network.open_relay(inner_port, hooks=self.relay_hooks)

    async def unforward(self, mapping: PortMapping) -> None:
        inner = (await netports.forwards(self.machine)).get(mapping.guest_port)
        if inner is not None:
            await netports.unforward(self.machine, inner)
        if self.network is not None:
            await self.network.close_relay(mapping.host_port)

    def settle(self) -> None:
        """Follow the guest agent's start after a cold boot: sietch-front answers the host
        while the Python agent is still starting (seconds under TCG)."""

        async def ready() -> None:
            with contextlib.suppress(SietchError):
                await self.agent.call("ready")

        self._settling = asyncio.create_task(ready(), name=f"settle-{self.id}")

    async def settled(self, timeout: float) -> None:
        """Once the guest agent has started (at most ``timeout``): a snapshot taken before
        would have every restore of it finish that start again. A paused VM can't get
        there, so it is not waited for."""
        task = self._settling
        if task is None or task.done() or self.info.state is SandboxState.PAUSED:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout)

    async def _closing(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
        closers, self.on_stop = self.on_stop, []
        for close in closers:
            try:
                await close()
            except Exception:
                self.log.exception("closing a connection to the sandbox failed")

    async def stop(self) -> None:
        """Kill the VM and release what it holds on the host: agent connection, network,
        cgroup (last: whatever is still in it is killed)."""
        try:
            await self._close_services()
            await self._closing()
            await self.agent.close()
        finally:
            try:
                await self.machine.kill()
            finally:
                try:
                    if self.network is not None:
                        await self.network.close()
                finally:
                    if self.cgroup is not None:
                        await asyncio.to_thread(self.cgroup.remove)

    async def detach(self) -> None:
        """Let a persistent VM run on without us: close the agent, the network's relays and
        resolver, and QMP; the next Sietch process adopts it."""
        try:
            await self._close_services()
            await self._closing()
            await self.agent.close()
            if self.network is not None:
                await self.network.detach()
        finally:
            await self.machine.detach()

    @asynccontextmanager
    async def exclusive(self, wait_s: float) -> AsyncIterator[None]:
        """Hold :attr:`lock` alone; :class:`Conflict` if what runs in flight (commands, file
        transfers) has not finished within ``wait_s``, so a long command fails the caller
        fast and clearly instead of hanging it."""
        try:
            await self.lock.acquire_exclusive(wait_s)
        except TimeoutError:
            raise Conflict(
                f"sandbox {self.id} is busy: commands or file transfers still ran after "
                f"{wait_s:g}s (SIETCH_LOCK_WAIT_S)"
            ) from None
        try:
            yield
        finally:
            self.lock.release_exclusive()

    async def pause(self) -> None:
        await vmsnap.pause(self.machine)
        self.info.state = SandboxState.PAUSED

    async def resume(self) -> None:
        await vmsnap.resume(self.machine)
        self.info.state = SandboxState.RUNNING

    # -- commands ---------------------------------------------------------------

    def _defaults(self, params: dict[str, Any]) -> dict[str, Any]:
        """The sandbox's own environment, user and directory under what the caller gave."""
        params["env"] = {**self.info.env, **params.get("env", {})}
        if self.info.user is not None:  # a numeric USER (OCI images) is a uid
            user = self.info.user
            params.setdefault("user", int(user) if user.isdigit() else user)
        if self.info.cwd is not None:
            params.setdefault("cwd", self.info.cwd)
        return params

    async def start(
        self,
        cmd: str | Sequence[str],
        *,
        stdin: bool = False,
        pty: bool = False,
        cols: int | None = None,
        rows: int | None = None,
        **options: Any,
    ) -> Execution:
        """Start a command and return its live :class:`Execution`."""
        params = self._defaults(command_params(cmd, **options))
        params.update(stdin=stdin or pty, pty=pty)
        if pty:
            params.update(cols=cols or 80, rows=rows or 24)
        stream = await self.agent.open("exec", **params)
        async for event in stream:
            if isinstance(event, dict) and event.get("type") == "started":
                return Execution(stream, int(event["pid"]))
        stream.check()
        raise AssertionError("exec stream ended without start or error")

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        stdin: bytes | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        **options: Any,
    ) -> CommandResult:
        """Run a command to completion and return its output and exit status."""
        execution = await self.start(cmd, stdin=stdin is not None, **options)
        try:
            if stdin is not None:
                await execution.send_stdin(stdin)
                await execution.close_stdin()
            return await execution.result(on_stdout, on_stderr)
        finally:
            await execution.close()

    async def start_background(
        self, cmd: str | Sequence[str], tag: str | None = None, **options: Any
    ) -> int:
        """Start a command that keeps running on its own; returns its pid."""
        params = self._defaults(command_params(cmd, **options))
        result = await self.agent.call("exec", background=True, tag=tag, **params)
        return int(result["pid"])

    async def processes(self) -> list[ProcessInfo]:
        result = await self.agent.call("processes")
        return [ProcessInfo.model_validate(p) for p in result["processes"]]

    async def signal(self, pid: int, sig: int | str = "SIGTERM") -> None:
        await self.agent.call("signal", pid=pid, signal=sig)

    async def wait(self, pid: int, timeout: float | None = None) -> CommandResult:
        result = await self.agent.call("wait", pid=pid, timeout=timeout)
        return CommandResult(
            exit_code=result.get("exit_code"), signal=result.get("signal"), pid=pid
        )

    async def attach(self, pid: int) -> Execution:
        stream = await self.agent.open("attach", pid=pid, follow=True)
        return Execution(stream, pid)

    # -- files ------------------------------------------------------------------

    async def write_file(
        self,
        path: str,
        data: bytes | AsyncIterable[bytes],
        mode: int | None = None,
        size: int | None = None,
    ) -> int:
        """Write a file (any size, streamed); parents are created. Returns its size.

        ``size``, what a stream is expected to hold (an HTTP Content-Length), only
        lets the guest take its fast path for small files; the data decides the file.
        """
        if isinstance(data, bytes | bytearray | memoryview):
            size = len(data)
        async with await self.agent.open(
            "write", path=path, mode=mode, parents=True, size=size
        ) as stream:
            try:
                if isinstance(data, bytes | bytearray | memoryview):
                    await stream.send(data)
                else:
                    async for chunk in data:
                        await stream.send(chunk)
                await stream.send_eof()
            except AgentUnavailable:
                # The agent refused the write (bad path, no permission) and closed the
                # stream while we were still sending: its error says why.
                await stream.result()
                raise
            return int((await stream.result())["size"])

    async def read_file(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes as they stream out of the guest."""
        async with await self.agent.open("read", path=path) as stream:
            async for event in stream:
                if isinstance(event, Output):
                    yield event.data
            stream.check()

    async def read_bytes(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.read_file(path)])

    async def list_dir(self, path: str, depth: int = 1) -> list[FileInfo]:
        result = await self.agent.call("list", path=path, depth=depth)
        return [FileInfo.from_agent(e) for e in result["entries"]]

    async def stat(self, path: str) -> FileInfo:
        return FileInfo.from_agent((await self.agent.call("stat", path=path))["entry"])

    async def mkdir(self, path: str, parents: bool = True) -> None:
        await self.agent.call("mkdir", path=path, parents=parents)

    async def remove(self, path: str, recursive: bool = False) -> None:
        await self.agent.call("remove", path=path, recursive=recursive)

    async def rename(self, src: str, dst: str, overwrite: bool = False) -> None:
        await self.agent.call("rename", src=src, dst=dst, overwrite=overwrite)

    def console_log(self, limit: int = 256 * 1024) -> str:
        """The tail of the guest's serial console (boot messages, panics)."""
        return read_tail(self.machine.config.console_log, limit)

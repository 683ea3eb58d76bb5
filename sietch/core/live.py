"""A live sandbox: its QEMU machine, its agent connection, and what runs in it."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from sietch.agent import protocol
from sietch.agent.connection import AgentConnection, AgentStream, Output
from sietch.core.models import ExecResult, FileInfo, ProcessInfo, SandboxInfo
from sietch.errors import AgentUnavailable, InvalidArgument
from sietch.network.sandbox import SandboxNetwork
from sietch.vmm.qemu import QemuMachine, read_tail

log = logging.getLogger(__name__)

OutputCallback = Callable[[bytes], Any]


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
    ) -> ExecResult:
        """Wait for the end, collecting (and/or handing out) the output."""
        out, err = bytearray(), bytearray()
        async for chunk in self:
            is_err = chunk.channel == protocol.CHANNEL_STDERR
            if capture:
                (err if is_err else out).extend(chunk.data)
            callback = on_stderr if is_err else on_stdout
            if callback is not None and inspect.isawaitable(ret := callback(chunk.data)):
                await ret  # an async callback (a WebSocket send) paces the output
        final = self._stream.check()
        return ExecResult(
            exit_code=final.get("exit_code"),
            signal=final.get("signal"),
            timed_out=bool(final.get("timed_out")),
            stdout=bytes(out),
            stderr=bytes(err),
            pid=self.pid,
            duration_s=time.monotonic() - self.started,
        )

    async def close(self) -> None:
        await self._stream.close()


class LiveSandbox:
    """The live parts of one running sandbox."""

    def __init__(
        self,
        info: SandboxInfo,
        workdir: Path,
        machine: QemuMachine,
        agent: AgentConnection,
        network: SandboxNetwork | None = None,
    ):
        self.info = info
        self.workdir = workdir
        self.machine = machine
        self.agent = agent
        self.network = network
        """None when Sietch can't isolate (not root): slirp ``restrict=on``, no egress."""
        self.log = logging.LoggerAdapter(log, {"sandbox": info.id})

    @property
    def id(self) -> str:
        return self.info.id

    async def stop(self) -> None:
        """Kill the VM and release what it holds on the host: agent connection, network."""
        await self.agent.close()
        await self.machine.kill()
        if self.network is not None:
            await self.network.close()

    # -- commands ---------------------------------------------------------------

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
        params = command_params(cmd, **options)
        params["env"] = {**self.info.env, **params.get("env", {})}
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
    ) -> ExecResult:
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
        params = command_params(cmd, **options)
        params["env"] = {**self.info.env, **params.get("env", {})}
        result = await self.agent.call("exec", background=True, tag=tag, **params)
        return int(result["pid"])

    async def processes(self) -> list[ProcessInfo]:
        result = await self.agent.call("processes")
        return [ProcessInfo.model_validate(p) for p in result["processes"]]

    async def signal(self, pid: int, sig: int | str = "SIGTERM") -> None:
        await self.agent.call("signal", pid=pid, signal=sig)

    async def wait(self, pid: int, timeout: float | None = None) -> ExecResult:
        result = await self.agent.call("wait", pid=pid, timeout=timeout)
        return ExecResult(exit_code=result.get("exit_code"), signal=result.get("signal"), pid=pid)

    async def attach(self, pid: int) -> Execution:
        stream = await self.agent.open("attach", pid=pid, follow=True)
        return Execution(stream, pid)

    # -- files ------------------------------------------------------------------

    async def write_file(
        self, path: str, data: bytes | AsyncIterable[bytes], mode: int | None = None
    ) -> int:
        """Write a file (any size, streamed); parents are created. Returns its size."""
        async with await self.agent.open("write", path=path, mode=mode, parents=True) as stream:
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

# Generated from sietch/client/_async.py by scripts/unasync.py: do not edit.
"""The synchronous SDK: :class:`Client` and :class:`Sandbox`."""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Literal, TypeVar, overload

import httpx
from websockets import InvalidHandshake, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection

from sietch.client import _images as images_io
from sietch.client._base import SandboxBase
from sietch.client._core import (
    CHUNK,
    DEFAULT_SHELL,
    NOT_GIVEN,
    Call,
    ClientConfig,
    Ops,
    StreamState,
    Timeout,
    as_bytes,
    attach_message,
    check_response,
    control,
    handshake_error,
    network_policy,
    start_message,
    transport_error,
)
from sietch.client._io_sync import (
    Data,
    OutputCallback,
    call_back,
    chunks,
    to_thread,
    ws_connect,
    ws_recv,
)
from sietch.client._models import (
    CommandResult,
    FileInfo,
    ImageInfo,
    NetworkPolicy,
    PortInfo,
    ProcessExit,
    ProcessInfo,
    SandboxInfo,
    ServerInfo,
    SnapshotInfo,
    WriteInfo,
)
from sietch.errors import FileNotFound, SandboxNotFound, SietchError, Unavailable

T = TypeVar("T")


class Client:
    """One connection pool to a Sietch server; sandboxes made through it share it."""

    def __init__(
        self, url: str | None = None, api_key: str | None = None, *, timeout: Timeout = NOT_GIVEN
    ) -> None:
        self.config = ClientConfig.resolve(url, api_key, timeout)
        self._http = httpx.Client(**self.config.http_options())

    def call(self, call: Call[T]) -> T:
        """Send one API request and return its parsed answer (raising typed errors)."""
        try:
            response = self._http.request(call.method, call.path, **call.request_options())
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config) from exc
        check_response(response)
        return call.parse(response)

    @contextlib.contextmanager
    def stream(self, call: Call[Any], content: Any = None) -> Iterator[httpx.Response]:
        """Send a request whose body or answer is streamed."""
        request = self._http.build_request(
            call.method, call.path, content=content, **call.request_options()
        )
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config) from exc
        try:
            if response.is_error:
                response.read()
            check_response(response)
            yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config) from exc
        finally:
            response.close()

    def websocket(self, path: str) -> ClientConnection:
        try:
            return ws_connect(
                self.config.ws_url(path),
                additional_headers=self.config.headers,
                user_agent_header=None,
                proxy=None,
                compression=None,
                max_size=None,
                open_timeout=self.config.timeout,
            )
        except InvalidStatus as exc:
            raise handshake_error(exc.response.status_code, exc.response.body) from exc
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise Unavailable(f"cannot open a WebSocket to {self.config.url}: {exc}") from exc

    @property
    def images(self) -> Images:
        """Build, import, list and remove images (``client.images.build(...)``)."""
        return Images(self)

    def info(self) -> ServerInfo:
        """The server's version, accelerator and limits."""
        return self.call(Ops.info())

    def health(self) -> dict[str, Any]:
        return self.call(Ops.health())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Images:
    """The server's images: built-in ones, and those built or imported by users."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def build(
        self,
        name: str,
        context: str | os.PathLike[str] | None = ".",
        *,
        dockerfile: str | os.PathLike[str] | None = None,
        dockerfile_text: str | None = None,
        build_args: Mapping[str, str] | None = None,
        disk_mib: int | None = None,
        internet: bool | None = None,
        allow: Sequence[str] | None = None,
        on_event: images_io.EventCallback | None = None,
    ) -> ImageInfo:
        """Build image ``name`` from a Dockerfile (default ``<context>/Dockerfile``) in
        sandboxes on the server, as ``docker build`` would; ``on_event`` hears each step
        and its output as it runs. A failed step raises ImageBuildError with its output
        and exit code in ``details``."""
        body = to_thread(
            images_io.pack_context, context, dockerfile and str(dockerfile), dockerfile_text
        )
        call = images_io.build_call(
            name, build_args=build_args, disk_mib=disk_mib, internet=internet, allow=allow
        )
        return self._events(call, body, on_event)

    def import_image(
        self,
        name: str,
        archive: str | os.PathLike[str],
        *,
        on_event: images_io.EventCallback | None = None,
    ) -> ImageInfo:
        """Import a ``docker save`` tarball or an OCI image layout (a tar) as ``name``."""
        body = to_thread(open, archive, "rb")
        return self._events(images_io.import_call(name), body, on_event)

    def _events(
        self,
        call: Call[None],
        body: IO[bytes],
        on_event: images_io.EventCallback | None,
    ) -> ImageInfo:
        events = images_io.BuildEvents()
        try:
            with self._client.stream(call, content=chunks(body)) as response:
                for line in response.iter_lines():
                    event = events.feed(line)
                    if event is not None and on_event is not None:
                        on_event(event)
        finally:
            body.close()
        return events.result()

    def list(self) -> builtins.list[ImageInfo]:
        return self._client.call(images_io.list_call())

    def get(self, name: str) -> ImageInfo:
        """One image, with the sandboxes and snapshots that use it."""
        return self._client.call(images_io.get_call(name))

    def delete(self, name: str) -> None:
        """Remove a user image; Conflict (409) names what still uses it."""
        self._client.call(images_io.delete_call(name))

    def prune(self) -> builtins.list[str]:
        """Delete the server's cached build layers no image needs; returns what went."""
        return self._client.call(images_io.prune_call())


class _Streamed:
    """An exec WebSocket: output in, stdin/control out."""

    def __init__(self, ws: ClientConnection, state: StreamState) -> None:
        self.ws = ws
        self.state = state

    @classmethod
    def open(
        cls,
        client: Client,
        sandbox_id: str,
        first: str,
        capture: bool,
    ) -> _Streamed:
        ws = client.websocket(f"/sandboxes/{sandbox_id}/exec/ws")
        stream = cls(ws, StreamState(capture=capture))
        try:
            ws.send(first)
            while stream.state.pid is None:
                stream.state.feed(ws.recv())
        except WebSocketException as exc:
            ws.close()
            raise stream.state.ended_early() from exc
        except BaseException:
            ws.close()
            raise
        return stream

    def next_output(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next output chunk, or None once the command ended; TimeoutError if none came."""
        while self.state.result is None:
            try:
                message = ws_recv(self.ws, timeout)
            except WebSocketException as exc:
                raise self.state.ended_early() from exc
            out = self.state.feed(message)
            if out is not None:
                return out
        return None

    def finish(
        self,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult:
        while (out := self.next_output()) is not None:
            call_back(on_stderr if out[0] == 2 else on_stdout, out[1])
        assert self.state.result is not None
        return self.state.result

    def send(self, data: bytes | str) -> None:
        self.ws.send(as_bytes(data))

    def control(self, kind: str, **fields: Any) -> None:
        self.ws.send(control(kind, **fields))

    def close(self) -> None:
        self.ws.close()


class Pty:
    """An interactive terminal session in a sandbox (``sb.pty()``)."""

    def __init__(self, stream: _Streamed) -> None:
        self._stream = stream

    @property
    def pid(self) -> int:
        assert self._stream.state.pid is not None
        return self._stream.state.pid

    @property
    def result(self) -> CommandResult | None:
        """How the session's process ended; None while it runs."""
        return self._stream.state.result

    def send(self, data: bytes | str) -> None:
        """Type into the terminal."""
        self._stream.send(data)

    def resize(self, cols: int, rows: int) -> None:
        self._stream.control("resize", cols=cols, rows=rows)

    def signal(self, signal: int | str) -> None:
        self._stream.control("signal", signal=signal)

    # The sync Pty.recv also takes a timeout (SYNC_ONLY in scripts/unasync.py).
    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next output; None once the process ended; ``TimeoutError`` after ``timeout``."""
        out = self._stream.next_output(timeout)
        return None if out is None else out[1]

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self.recv()) is not None:
            yield chunk

    def wait(self) -> CommandResult:
        return self._stream.finish()

    def close(self) -> None:
        """Hang up: like a closed terminal, a process still running gets SIGHUP."""
        if self.result is None:
            with contextlib.suppress(SietchError, WebSocketException, OSError):
                self.signal("SIGHUP")
        self._stream.close()

    def __enter__(self) -> Pty:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessHandle:
    """A background process started with ``exec(..., background=True)``."""

    def __init__(self, sandbox: Sandbox, pid: int, info: ProcessInfo | None = None) -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.info = info

    def wait(self, timeout: float | None = None) -> ProcessExit:
        return self.sandbox.process.wait(self.pid, timeout)

    def kill(self, signal: int | str = "SIGKILL") -> None:
        self.sandbox.process.kill(self.pid, signal)

    def output(
        self,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult:
        """Follow its output until it ends (what it printed so far comes first)."""
        return self.sandbox.process.attach(self.pid, on_stdout, on_stderr)

    def __repr__(self) -> str:
        return f"<ProcessHandle pid={self.pid} in {self.sandbox.id}>"


class Processes:
    """``sb.process``: background processes."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def start(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        tag: str | None = None,
        timeout: float | None = None,
    ) -> ProcessHandle:
        """Start a command that keeps running; returns at once."""
        call = Ops.start_process(
            self._sb.id, cmd, env=env, cwd=cwd, user=user, tag=tag, timeout=timeout
        )
        info = self._sb.client.call(call)
        return ProcessHandle(self._sb, info.pid, info)

    def list(self) -> builtins.list[ProcessInfo]:
        return self._sb.client.call(Ops.list_processes(self._sb.id))

    def signal(self, pid: int, signal: int | str = "SIGTERM") -> None:
        self._sb.client.call(Ops.signal(self._sb.id, pid, signal))

    def kill(self, pid: int, signal: int | str = "SIGKILL") -> None:
        self.signal(pid, signal)

    def wait(self, pid: int, timeout: float | None = None) -> ProcessExit:
        """Wait for the process to end (``CommandTimeout`` when ``timeout`` passes first)."""
        return self._sb.client.call(Ops.wait(self._sb.id, pid, timeout))

    def attach(
        self,
        pid: int,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
    ) -> CommandResult:
        stream = _Streamed.open(self._sb.client, self._sb.id, attach_message(pid), True)
        try:
            return stream.finish(on_stdout, on_stderr)
        finally:
            stream.close()


class Files:
    """``sb.files``: the sandbox's filesystem; bodies are streamed both ways."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def write(self, path: str, data: Data, *, mode: int | None = None) -> WriteInfo:
        """Write bytes, text, a file object or an iterable of bytes (parents are made)."""
        call = Ops.write(self._sb.id, path, mode)
        with self._sb.client.stream(call, content=chunks(data)) as response:
            response.read()
            return call.parse(response)

    def iter_bytes(self, path: str) -> Iterator[bytes]:
        """The file's bytes as they arrive."""
        with self._sb.client.stream(Ops.read(self._sb.id, path)) as response:
            yield from response.iter_bytes(CHUNK)

    def read(self, path: str) -> bytes:
        return b"".join([chunk for chunk in self.iter_bytes(path)])

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def download(self, path: str, dest: IO[bytes]) -> int:
        """Copy the file into an open binary file object; returns the byte count."""
        size = 0
        for chunk in self.iter_bytes(path):
            to_thread(dest.write, chunk)
            size += len(chunk)
        return size

    def list(self, path: str = "/", *, depth: int = 1) -> builtins.list[FileInfo]:
        return self._sb.client.call(Ops.list_files(self._sb.id, path, depth))

    def stat(self, path: str) -> FileInfo:
        return self._sb.client.call(Ops.stat(self._sb.id, path))

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except FileNotFound:
            return False
        return True

    def mkdir(self, path: str, *, parents: bool = True) -> FileInfo:
        return self._sb.client.call(Ops.mkdir(self._sb.id, path, parents))

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self._sb.client.call(Ops.remove(self._sb.id, path, recursive))

    def rename(self, src: str, dst: str, *, overwrite: bool = False) -> FileInfo:
        return self._sb.client.call(Ops.rename(self._sb.id, src, dst, overwrite))


class Sandbox(SandboxBase):
    """A microVM sandbox. Make one with :meth:`create`; ``with`` deletes it on exit."""

    def __init__(
        self,
        info: SandboxInfo,
        client: Client,
        *,
        keep: bool = True,
        owns_client: bool = False,
    ) -> None:
        super().__init__(info, keep=keep)
        self.client = client
        self._owns_client = owns_client
        self.files = Files(self)
        self.process = Processes(self)

    @classmethod
    def create(
        cls,
        image: str | None = None,
        *,
        vcpus: int | None = None,
        memory_mib: int | None = None,
        disk_mib: int | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        template: str | None = "auto",
        internet: bool | None = None,
        allow: Sequence[str] | None = None,
        keep: bool = False,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
        request_timeout: Timeout = NOT_GIVEN,
    ) -> Sandbox:
        """Boot a new sandbox (``None`` = the server's default for that setting).

        ``timeout_s`` deletes it that long after creation; ``keep=True`` keeps it
        when the ``with`` block ends. ``internet`` and ``allow`` set its egress
        policy (see :meth:`set_network`).
        """
        owned = client is None
        client = client or Client(url, api_key)
        call = Ops.create(
            image=image,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_mib=disk_mib,
            env=env,
            labels=labels,
            timeout_s=timeout_s,
            request_timeout=request_timeout,
            template=template,
            network=network_policy(internet, allow),
        )
        try:
            info = client.call(call)
        except BaseException:
            if owned:
                client.close()
            raise
        return cls(info, client, keep=keep, owns_client=owned)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Sandbox:
        """A handle on an existing sandbox (kept when a ``with`` block ends)."""
        owned = client is None
        client = client or Client(url, api_key)
        try:
            info = client.call(Ops.get(sandbox_id))
        except BaseException:
            if owned:
                client.close()
            raise
        return cls(info, client, keep=True, owns_client=owned)

    @classmethod
    def list(
        cls,
        labels: Mapping[str, str] | None = None,
        *,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[SandboxInfo]:
        """Every sandbox on the server, or those carrying all of ``labels``."""
        if client is not None:
            return client.call(Ops.list(labels))
        with Client(url, api_key) as own:
            return own.call(Ops.list(labels))

    def refresh(self) -> SandboxInfo:
        """Fetch the sandbox's record again (its state may have changed)."""
        self._info = self.client.call(Ops.get(self.id))
        return self._info

    # -- network ----------------------------------------------------------------

    def set_network(
        self, *, internet: bool = True, allow: Sequence[str] | None = None
    ) -> NetworkPolicy:
        """Replace the egress policy: public internet on or off, plus ``allow`` (CIDRs and
        domain names) reachable either way. New connections follow it at once."""
        policy = NetworkPolicy(internet=internet, allow=list(allow or []))
        self._info = self.client.call(Ops.set_network(self.id, policy))
        return self._info.network

    # -- ports ------------------------------------------------------------------

    def expose(self, port: int) -> PortInfo:
        """Reach guest TCP ``port`` from the server's host; asking again returns the same."""
        return self.client.call(Ops.expose(self.id, port))

    def unexpose(self, port: int) -> None:
        """Close the host side of an exposed port (NotFound if it was not exposed)."""
        self.client.call(Ops.unexpose(self.id, port))

    def ports(self) -> builtins.list[PortInfo]:
        """The exposed ports and their host addresses."""
        return self.client.call(Ops.ports(self.id))

    def proxy_url(self, port: int, path: str = "") -> str:
        """The server's HTTP proxy to ``port`` (send the API key with each request)."""
        return f"{self.client.config.url}/api/v1/sandboxes/{self.id}/ports/{port}/proxy/{path}"

    # -- snapshots --------------------------------------------------------------

    def pause(self) -> SandboxInfo:
        """Stop the VM's CPUs; memory and processes stay as they are."""
        self._info = self.client.call(Ops.pause(self.id))
        return self._info

    def resume(self) -> SandboxInfo:
        self._info = self.client.call(Ops.resume(self.id))
        return self._info

    def snapshot(
        self, name: str | None = None, *, labels: Mapping[str, str] | None = None
    ) -> SnapshotInfo:
        """Save memory, processes and disk; the sandbox keeps running."""
        return self.client.call(Ops.snapshot(self.id, name, labels))

    def fork(
        self, count: int = 1, *, labels: Mapping[str, str] | None = None
    ) -> builtins.list[Sandbox]:
        """``count`` running copies of this sandbox (sharing this client)."""
        infos = self.client.call(Ops.fork(self.id, count, labels))
        return [type(self)(info, self.client, keep=self.keep) for info in infos]

    @classmethod
    def restore(
        cls,
        snapshot_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        hostname: str | None = None,
        timeout_s: float | None = None,
        internet: bool | None = None,
        allow: Sequence[str] | None = None,
        keep: bool = False,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Sandbox:
        """A new running sandbox from a snapshot; the original needn't exist any more.

        Its egress policy is the snapshotted sandbox's unless ``internet``/``allow`` say."""
        owned = client is None
        client = client or Client(url, api_key)
        call = Ops.restore(
            snapshot_id,
            labels=labels,
            env=env,
            hostname=hostname,
            timeout_s=timeout_s,
            network=network_policy(internet, allow),
        )
        try:
            info = client.call(call)
        except BaseException:
            if owned:
                client.close()
            raise
        return cls(info, client, keep=keep, owns_client=owned)

    @staticmethod
    def list_snapshots(
        templates: bool = False,
        *,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Every snapshot on the server (``parent_id`` links them into a tree)."""
        if client is not None:
            return client.call(Ops.list_snapshots(templates))
        with Client(url, api_key) as own:
            return own.call(Ops.list_snapshots(templates))

    @staticmethod
    def delete_snapshot(
        snapshot_id: str,
        *,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """Delete a snapshot (refused while a sandbox or child snapshot builds on it)."""
        if client is not None:
            return client.call(Ops.delete_snapshot(snapshot_id))
        with Client(url, api_key) as own:
            return own.call(Ops.delete_snapshot(snapshot_id))

    @overload
    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        user: str | int | None = ...,
        timeout: float | None = ...,
        stdin: bytes | str | None = ...,
        on_stdout: OutputCallback | None = ...,
        on_stderr: OutputCallback | None = ...,
        background: Literal[False] = ...,
    ) -> CommandResult: ...

    @overload
    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        user: str | int | None = ...,
        timeout: float | None = ...,
        stdin: bytes | str | None = ...,
        on_stdout: OutputCallback | None = ...,
        on_stderr: OutputCallback | None = ...,
        background: Literal[True],
    ) -> ProcessHandle: ...

    def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        background: bool = False,
    ) -> CommandResult | ProcessHandle:
        """Run a command (a string runs in a shell, a list is an argv).

        Returns its :class:`CommandResult`; with ``on_stdout``/``on_stderr`` the
        output is handed over as it comes; with ``background=True`` it returns
        a :class:`ProcessHandle` at once.
        """
        if background:
            return self.process.start(cmd, env=env, cwd=cwd, user=user, timeout=timeout)
        if on_stdout is None and on_stderr is None:
            call = Ops.exec(self.id, cmd, env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin)
            return self.client.call(call)
        first = start_message(
            cmd, env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin is not None
        )
        stream = _Streamed.open(self.client, self.id, first, capture=True)
        try:
            if stdin is not None:
                stream.send(stdin)
                stream.control("eof")
            return stream.finish(on_stdout, on_stderr)
        finally:
            stream.close()

    def pty(
        self,
        cmd: str | Sequence[str] | None = None,
        *,
        cols: int = 80,
        rows: int = 24,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
    ) -> Pty:
        """An interactive terminal running ``cmd`` (default: a login shell)."""
        env = {"TERM": "xterm-256color", **(env or {})}
        first = start_message(
            cmd or DEFAULT_SHELL, env=env, cwd=cwd, user=user, pty=True, cols=cols, rows=rows
        )
        return Pty(_Streamed.open(self.client, self.id, first, capture=False))

    def logs(self, limit: int = 256 * 1024) -> str:
        """The tail of the VM's serial console."""
        return self.client.call(Ops.logs(self.id, limit))

    def kill(self) -> None:
        """Delete the sandbox: its VM stops and its disk is removed."""
        self.client.call(Ops.delete(self.id))

    def close(self) -> None:
        """Release the connection (the sandbox itself keeps running)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.keep:
                with contextlib.suppress(SandboxNotFound):
                    self.kill()
        finally:
            self.close()

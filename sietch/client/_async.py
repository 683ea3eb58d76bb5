"""The asyncio SDK: :class:`AsyncClient` and :class:`AsyncSandbox`.

Every request and message is built and decoded in :mod:`sietch.client._core`;
this module only sends them. The synchronous SDK, :mod:`sietch.client._sync`,
is generated from it by ``scripts/unasync.py`` (run it after editing this
file); what must differ is in the helpers of :mod:`sietch.client._io_async`
and :mod:`sietch.client._io_sync`, and in the few rules of that script.
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import IO, Any, Literal, TypeVar, overload

import httpx
from websockets import ConnectionClosedOK, InvalidHandshake, InvalidStatus, WebSocketException
from websockets.asyncio.client import ClientConnection

from sietch.client import _images as images_io
from sietch.client._base import SandboxBase
from sietch.client._code import DEFAULT_TIMEOUT_S as CODE_TIMEOUT_S
from sietch.client._code import ExecutionBuilder, run_code_call
from sietch.client._core import (
    CHUNK,
    DEFAULT_SHELL,
    NOT_GIVEN,
    Backoff,
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
from sietch.client._desktop import Button, DesktopOps
from sietch.client._io_async import (
    AsyncData,
    AsyncOutputCallback,
    call_back,
    chunks,
    sleep,
    to_thread,
    ws_connect,
    ws_recv,
)
from sietch.client._models import (
    CommandResult,
    DesktopView,
    Execution,
    FileInfo,
    ImageInfo,
    NetworkPolicy,
    PortInfo,
    ProcessExit,
    ProcessInfo,
    SandboxInfo,
    SandboxMetrics,
    ServerInfo,
    SnapshotInfo,
    TenantInfo,
    TimeoutAction,
    WriteInfo,
)
from sietch.errors import FileNotFound, SandboxNotFound, SietchError, Unavailable

T = TypeVar("T")


class AsyncClient:
    """One connection pool to a Sietch server, for asyncio code."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: Timeout = NOT_GIVEN,
        max_retries: int | None = None,
        retry_max_wait_s: float | None = None,
    ) -> None:
        """``max_retries`` and ``retry_max_wait_s`` bound the retries of a request refused
        with 429 or 503 (default 10 and 120 s, or ``SIETCH_MAX_RETRIES`` and
        ``SIETCH_RETRY_MAX_WAIT_S``; 0 retries: never)."""
        self.config = ClientConfig.resolve(
            url, api_key, timeout, max_retries=max_retries, retry_max_wait_s=retry_max_wait_s
        )
        self._http = httpx.AsyncClient(**self.config.http_options())

    async def call(self, call: Call[T]) -> T:
        """Send one API request and return its parsed answer (raising typed errors); a
        refusal for now (429, 503) is retried as :class:`~sietch.client._core.RetryPolicy` says."""
        backoff, options = Backoff(self.config.retry), call.request_options()
        while True:
            try:
                response = await self._http.request(call.method, call.path, **options)
            except httpx.TransportError as exc:
                raise transport_error(exc, self.config) from exc
            if (wait := backoff.after(response)) is None:
                break
            await sleep(wait)
        check_response(response)
        return call.parse(response)

    @contextlib.asynccontextmanager
    async def stream(self, call: Call[Any], content: Any = None) -> AsyncIterator[httpx.Response]:
        """Send a request whose body or answer is streamed (retried like :meth:`call` when
        the body is bytes or none: a streamed body can be sent only once)."""
        backoff = Backoff(self.config.retry)
        while True:
            request = self._http.build_request(
                call.method, call.path, content=content, **call.request_options()
            )
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise transport_error(exc, self.config) from exc
            if not response.is_error:
                break
            await response.aread()
            replayable = content is None or isinstance(content, bytes)
            if not replayable or (wait := backoff.after(response)) is None:
                break
            await response.aclose()
            await sleep(wait)
        try:
            check_response(response)
            yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config) from exc
        finally:
            await response.aclose()

    async def websocket(self, path: str) -> ClientConnection:
        """Open an API WebSocket; a handshake refused for now is retried like :meth:`call`."""
        backoff = Backoff(self.config.retry)
        while True:
            try:
                return await ws_connect(
                    self.config.ws_url(path),
                    additional_headers=self.config.headers,
                    user_agent_header=None,
                    proxy=None,
                    compression=None,
                    max_size=None,
                    open_timeout=self.config.timeout,
                )
            except InvalidStatus as exc:
                refused = handshake_error(exc.response.status_code, exc.response.body)
                if (wait := backoff.delay(refused)) is None:
                    raise refused from exc
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                raise Unavailable(f"cannot open a WebSocket to {self.config.url}: {exc}") from exc
            await sleep(wait)

    @property
    def images(self) -> AsyncImages:
        """Build, import, list and remove images (``client.images.build(...)``)."""
        return AsyncImages(self)

    async def info(self) -> ServerInfo:
        """The server's version, accelerator and limits."""
        return await self.call(Ops.info())

    async def tenant(self) -> TenantInfo:
        """The key's tenant, its quota and what it uses now."""
        return await self.call(Ops.tenant())

    async def health(self) -> dict[str, Any]:
        return await self.call(Ops.health())

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncImages:
    """The server's images: built-in ones, and those built or imported by users."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def build(
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
        body = await to_thread(
            images_io.pack_context, context, dockerfile and str(dockerfile), dockerfile_text
        )
        call = images_io.build_call(
            name, build_args=build_args, disk_mib=disk_mib, internet=internet, allow=allow
        )
        return await self._events(call, body, on_event)

    async def import_image(
        self,
        name: str,
        archive: str | os.PathLike[str],
        *,
        on_event: images_io.EventCallback | None = None,
    ) -> ImageInfo:
        """Import a ``docker save`` tarball or an OCI image layout (a tar) as ``name``."""
        body = await to_thread(open, archive, "rb")
        return await self._events(images_io.import_call(name), body, on_event)

    async def _events(
        self,
        call: Call[None],
        body: IO[bytes],
        on_event: images_io.EventCallback | None,
    ) -> ImageInfo:
        events = images_io.BuildEvents()
        try:
            async with self._client.stream(call, content=chunks(body)) as response:
                async for line in response.aiter_lines():
                    event = events.feed(line)
                    if event is not None and on_event is not None:
                        on_event(event)
        finally:
            body.close()
        return events.result()

    async def list(self) -> builtins.list[ImageInfo]:
        return await self._client.call(images_io.list_call())

    async def get(self, name: str) -> ImageInfo:
        """One image, with the sandboxes and snapshots that use it."""
        return await self._client.call(images_io.get_call(name))

    async def delete(self, name: str) -> None:
        """Remove a user image; Conflict (409) names what still uses it."""
        await self._client.call(images_io.delete_call(name))

    async def prune(self) -> builtins.list[str]:
        """Delete the server's cached build layers no image needs; returns what went."""
        return await self._client.call(images_io.prune_call())


class _Streamed:
    """An exec WebSocket: output in, stdin/control out."""

    def __init__(self, ws: ClientConnection, state: StreamState) -> None:
        self.ws = ws
        self.state = state

    @classmethod
    async def open(
        cls,
        client: AsyncClient,
        sandbox_id: str,
        first: str,
        capture: bool,
    ) -> _Streamed:
        ws = await client.websocket(f"/sandboxes/{sandbox_id}/exec/ws")
        stream = cls(ws, StreamState(capture=capture))
        try:
            await ws.send(first)
            while stream.state.pid is None:
                stream.state.feed(await ws.recv())
        except WebSocketException as exc:
            await ws.close()
            raise stream.state.ended_early() from exc
        except BaseException:
            await ws.close()
            raise
        return stream

    async def next_output(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next output chunk, or None once the command ended; TimeoutError if none came."""
        while self.state.result is None:
            try:
                message = await ws_recv(self.ws, timeout)
            except WebSocketException as exc:
                raise self.state.ended_early() from exc
            out = self.state.feed(message)
            if out is not None:
                return out
        return None

    async def finish(
        self,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
    ) -> CommandResult:
        while (out := await self.next_output()) is not None:
            await call_back(on_stderr if out[0] == 2 else on_stdout, out[1])
        assert self.state.result is not None
        return self.state.result

    async def send(self, data: bytes | str) -> None:
        """Input for the command, dropped once it has ended, as a pipe's or a closed
        terminal's would be: the server closes the stream as the command ends, which can
        be before this is sent (:meth:`finish` still reads the result sent before)."""
        with contextlib.suppress(ConnectionClosedOK):
            await self.ws.send(as_bytes(data))

    async def control(self, kind: str, **fields: Any) -> None:
        """Like :meth:`send`: nothing to resize or signal once the command has ended."""
        with contextlib.suppress(ConnectionClosedOK):
            await self.ws.send(control(kind, **fields))

    async def close(self) -> None:
        await self.ws.close()


class AsyncPty:
    """An interactive terminal session in a sandbox (``await sb.pty()``)."""

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

    async def send(self, data: bytes | str) -> None:
        """Type into the terminal."""
        await self._stream.send(data)

    async def resize(self, cols: int, rows: int) -> None:
        await self._stream.control("resize", cols=cols, rows=rows)

    async def signal(self, signal: int | str) -> None:
        await self._stream.control("signal", signal=signal)

    # The sync Pty.recv also takes a timeout (SYNC_ONLY in scripts/unasync.py).
    async def recv(self) -> bytes | None:
        """The next output; None once the process ended."""
        out = await self._stream.next_output()
        return None if out is None else out[1]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while (chunk := await self.recv()) is not None:
            yield chunk

    async def wait(self) -> CommandResult:
        return await self._stream.finish()

    async def close(self) -> None:
        """Hang up: like a closed terminal, a process still running gets SIGHUP."""
        if self.result is None:
            with contextlib.suppress(SietchError, WebSocketException, OSError):
                await self.signal("SIGHUP")
        await self._stream.close()

    async def __aenter__(self) -> AsyncPty:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncProcessHandle:
    """A background process started with ``exec(..., background=True)``."""

    def __init__(self, sandbox: AsyncSandbox, pid: int, info: ProcessInfo | None = None) -> None:
        self.sandbox = sandbox
        self.pid = pid
        self.info = info

    async def wait(self, timeout: float | None = None) -> ProcessExit:
        return await self.sandbox.process.wait(self.pid, timeout)

    async def kill(self, signal: int | str = "SIGKILL") -> None:
        await self.sandbox.process.kill(self.pid, signal)

    async def output(
        self,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
    ) -> CommandResult:
        """Follow its output until it ends (what it printed so far comes first)."""
        return await self.sandbox.process.attach(self.pid, on_stdout, on_stderr)

    def __repr__(self) -> str:
        return f"<AsyncProcessHandle pid={self.pid} in {self.sandbox.id}>"


class AsyncProcesses:
    """``sb.process``: background processes."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def start(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        tag: str | None = None,
        timeout: float | None = None,
    ) -> AsyncProcessHandle:
        """Start a command that keeps running; returns at once."""
        call = Ops.start_process(
            self._sb.id, cmd, env=env, cwd=cwd, user=user, tag=tag, timeout=timeout
        )
        info = await self._sb.client.call(call)
        return AsyncProcessHandle(self._sb, info.pid, info)

    async def list(self) -> builtins.list[ProcessInfo]:
        return await self._sb.client.call(Ops.list_processes(self._sb.id))

    async def signal(self, pid: int, signal: int | str = "SIGTERM") -> None:
        await self._sb.client.call(Ops.signal(self._sb.id, pid, signal))

    async def kill(self, pid: int, signal: int | str = "SIGKILL") -> None:
        await self.signal(pid, signal)

    async def wait(self, pid: int, timeout: float | None = None) -> ProcessExit:
        """Wait for the process to end (``CommandTimeout`` when ``timeout`` passes first)."""
        return await self._sb.client.call(Ops.wait(self._sb.id, pid, timeout))

    async def attach(
        self,
        pid: int,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
    ) -> CommandResult:
        stream = await _Streamed.open(self._sb.client, self._sb.id, attach_message(pid), True)
        try:
            return await stream.finish(on_stdout, on_stderr)
        finally:
            await stream.close()


class AsyncFiles:
    """``sb.files``: the sandbox's filesystem; bodies are streamed both ways."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def write(self, path: str, data: AsyncData, *, mode: int | None = None) -> WriteInfo:
        """Write bytes, text, a file object or an (async) iterable of bytes."""
        call = Ops.write(self._sb.id, path, mode)
        async with self._sb.client.stream(call, content=chunks(data)) as response:
            await response.aread()
            return call.parse(response)

    async def iter_bytes(self, path: str) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive."""
        async with self._sb.client.stream(Ops.read(self._sb.id, path)) as response:
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk

    async def read(self, path: str) -> bytes:
        return b"".join([chunk async for chunk in self.iter_bytes(path)])

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def download(self, path: str, dest: IO[bytes]) -> int:
        """Copy the file into an open binary file object; returns the byte count."""
        size = 0
        async for chunk in self.iter_bytes(path):
            await to_thread(dest.write, chunk)
            size += len(chunk)
        return size

    async def list(self, path: str = "/", *, depth: int = 1) -> builtins.list[FileInfo]:
        return await self._sb.client.call(Ops.list_files(self._sb.id, path, depth))

    async def stat(self, path: str) -> FileInfo:
        return await self._sb.client.call(Ops.stat(self._sb.id, path))

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except FileNotFound:
            return False
        return True

    async def mkdir(self, path: str, *, parents: bool = True) -> FileInfo:
        return await self._sb.client.call(Ops.mkdir(self._sb.id, path, parents))

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self._sb.client.call(Ops.remove(self._sb.id, path, recursive))

    async def rename(self, src: str, dst: str, *, overwrite: bool = False) -> FileInfo:
        return await self._sb.client.call(Ops.rename(self._sb.id, src, dst, overwrite))


class AsyncDesktop:
    """``sb.desktop``: the screen, mouse and keyboard of a sandbox made from a desktop
    image: computer use (coordinates are the screen's pixels; every action returns the
    server's JSON answer, with ``screenshot`` (base64 PNG) when asked for), and
    :meth:`url`, a live view for a person in a browser (noVNC)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def screenshot(
        self,
        *,
        format: Literal["png", "jpeg", "webp"] = "png",
        region: tuple[int, int, int, int] | None = None,
        scale: float | None = None,
        quality: int | None = None,
    ) -> bytes:
        """The screen now, as image bytes; ``region`` is (x, y, width, height)."""
        call = DesktopOps.screenshot(self._sb.id, format, region, scale, quality)
        return await self._sb.client.call(call)

    async def act(self, action: str, **fields: Any) -> dict[str, Any]:
        """Any action by name (``act("click", x=1, y=2)``); the methods below are shorthands."""
        return await self._sb.client.call(DesktopOps.act(self._sb.id, action, fields))

    async def move(self, x: int, y: int) -> dict[str, Any]:
        return await self.act("move", x=x, y=y)

    async def click(
        self,
        x: int | None = None,
        y: int | None = None,
        *,
        button: Button = "left",
        count: int = 1,
        modifiers: str | None = None,
        screenshot: bool = False,
    ) -> dict[str, Any]:
        """Click (``count`` 2 or 3: double, triple) where the pointer is, or at (x, y)."""
        fields = {"button": button, "count": count, "modifiers": modifiers}
        return await self.act("click", x=x, y=y, screenshot=screenshot, **fields)

    async def double_click(self, x: int | None = None, y: int | None = None) -> dict[str, Any]:
        return await self.click(x, y, count=2)

    async def right_click(self, x: int | None = None, y: int | None = None) -> dict[str, Any]:
        return await self.click(x, y, button="right")

    async def mouse_down(self, button: Button = "left") -> dict[str, Any]:
        return await self.act("mouse_down", button=button)

    async def mouse_up(self, button: Button = "left") -> dict[str, Any]:
        return await self.act("mouse_up", button=button)

    async def drag(self, path: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """Press at the first point, move through the others, release at the last."""
        return await self.act("drag", path=[list(p) for p in path])

    async def scroll(
        self,
        direction: Literal["up", "down", "left", "right"] = "down",
        amount: int = 3,
        x: int | None = None,
        y: int | None = None,
    ) -> dict[str, Any]:
        return await self.act("scroll", direction=direction, amount=amount, x=x, y=y)

    async def key(self, keys: str) -> dict[str, Any]:
        """xdotool key names: ``"Return"``, ``"ctrl+l"``, several separated by spaces."""
        return await self.act("key", keys=keys)

    async def hold_key(self, keys: str, duration: float) -> dict[str, Any]:
        return await self.act("hold_key", keys=keys, duration=duration)

    async def type(self, text: str, *, delay_ms: int | None = None) -> dict[str, Any]:
        return await self.act("type", text=text, delay_ms=delay_ms)

    async def wait(self, duration: float) -> dict[str, Any]:
        return await self.act("wait", duration=duration)

    async def cursor_position(self) -> tuple[int, int]:
        answer = await self.act("cursor_position")
        return answer["x"], answer["y"]

    async def screen_size(self) -> tuple[int, int]:
        answer = await self.act("screen_size")
        return answer["width"], answer["height"]

    async def open_url(self, url: str) -> dict[str, Any]:
        """Open ``url`` in the desktop's Chromium (a new tab once it runs)."""
        return await self.act("open_url", url=url)

    async def launch(self, *command: str) -> dict[str, Any]:
        """Start an application as the desktop's user: ``launch("xfce4-terminal")``."""
        return await self.act("launch", command=list(command))

    async def windows(self) -> dict[str, Any]:
        """``{"windows": [{id, title, pid, x, y, width, height, desktop}], "active": ...}``."""
        return await self.act("windows")

    async def clipboard_get(self) -> str:
        return str((await self.act("clipboard_get"))["text"])

    async def clipboard_set(self, text: str) -> dict[str, Any]:
        return await self.act("clipboard_set", text=text)

    async def anthropic(
        self,
        tool_input: dict[str, Any],
        *,
        display_width: int | None = None,
        display_height: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Run an input of Anthropic's computer tool; the ``content`` of its tool_result."""
        call = DesktopOps.tool(self._sb.id, "anthropic", tool_input, display_width, display_height)
        return await self._sb.client.call(call)

    async def openai(
        self,
        action: dict[str, Any],
        *,
        display_width: int | None = None,
        display_height: int | None = None,
    ) -> dict[str, Any]:
        """Run an OpenAI computer_use_preview action (or computer_call); its
        ``computer_call_output``."""
        call = DesktopOps.tool(self._sb.id, "openai", action, display_width, display_height)
        return await self._sb.client.call(call)

    async def url(self, *, view_only: bool = False, ttl: float | None = None) -> DesktopView:
        """A viewer link, valid ``ttl`` seconds (server default: an hour); ``view_only``
        lets the person watch but not type or click. Also the VNC password and screen size."""
        return await self._sb.client.call(Ops.desktop_view(self._sb.id, view_only, ttl))

    async def revoke(self) -> int:
        """End every viewer link of the sandbox and the browser sessions they opened."""
        return await self._sb.client.call(Ops.revoke_links(self._sb.id, "desktop"))


class AsyncIde:
    """``sb.ide``: code-server (VS Code) in the sandbox, in a browser through the server."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def url(self, *, folder: str | None = None, ttl: float | None = None) -> str:
        """A link that opens ``folder`` (default ``/home/user``), valid ``ttl`` seconds."""
        return await self._sb.client.call(Ops.ide_url(self._sb.id, folder, ttl))

    async def revoke(self) -> int:
        """End every IDE link of the sandbox and the browser sessions they opened."""
        return await self._sb.client.call(Ops.revoke_links(self._sb.id, "ide"))


class AsyncSandbox(SandboxBase):
    """A microVM sandbox. Make one with :meth:`create`; ``async with`` deletes it on exit."""

    def __init__(
        self,
        info: SandboxInfo,
        client: AsyncClient,
        *,
        keep: bool = True,
        owns_client: bool = False,
    ) -> None:
        super().__init__(info, keep=keep)
        self.client = client
        self._owns_client = owns_client
        self.files = AsyncFiles(self)
        self.process = AsyncProcesses(self)
        self.desktop = AsyncDesktop(self)
        self.ide = AsyncIde(self)

    @classmethod
    async def create(
        cls,
        image: str | None = None,
        *,
        vcpus: int | None = None,
        memory_mib: int | None = None,
        disk_mib: int | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        on_timeout: TimeoutAction | None = None,
        idle_timeout_s: float | None = None,
        on_idle: TimeoutAction | None = None,
        auto_resume: bool | None = None,
        template: str | None = "auto",
        internet: bool | None = None,
        allow: Sequence[str] | None = None,
        resolution: tuple[int, int] | None = None,
        dpi: int | None = None,
        prefer_node: str | None = None,
        keep: bool = False,
        client: AsyncClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
        request_timeout: Timeout = NOT_GIVEN,
    ) -> AsyncSandbox:
        """Boot a new sandbox (``None`` = the server's default for that setting).

        ``timeout_s`` after creation ``on_timeout`` happens: ``"kill"`` (the default)
        deletes it, ``"pause"`` stops its CPUs, ``"hibernate"`` saves it to disk and ends
        its VM; ``idle_timeout_s`` does ``on_idle`` (default ``"hibernate"``) once
        nothing has used it that long. With ``auto_resume`` (the default) any call to a
        paused or hibernated sandbox wakes it. ``keep=True`` keeps it when the
        ``async with`` block ends. ``internet`` and ``allow`` set its egress policy (see
        :meth:`set_network`). ``resolution`` (width, height) and ``dpi`` size a desktop
        image's screen. ``prefer_node``: against a cluster's gateway, the node to put it on
        if that one has room (e.g. the caller's own); elsewhere otherwise.
        """
        owned = client is None
        client = client or AsyncClient(url, api_key)
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
            timeouts={
                "on_timeout": on_timeout,
                "idle_timeout_s": idle_timeout_s,
                "on_idle": on_idle,
                "auto_resume": auto_resume,
            },
            resolution=resolution,
            dpi=dpi,
            prefer_node=prefer_node,
        )
        try:
            info = await client.call(call)
        except BaseException:
            if owned:
                await client.close()
            raise
        return cls(info, client, keep=keep, owns_client=owned)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        client: AsyncClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncSandbox:
        """A handle on an existing sandbox (kept when an ``async with`` block ends)."""
        owned = client is None
        client = client or AsyncClient(url, api_key)
        try:
            info = await client.call(Ops.get(sandbox_id))
        except BaseException:
            if owned:
                await client.close()
            raise
        return cls(info, client, keep=True, owns_client=owned)

    @classmethod
    async def list(
        cls,
        labels: Mapping[str, str] | None = None,
        *,
        client: AsyncClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[SandboxInfo]:
        """Every sandbox on the server, or those carrying all of ``labels``."""
        if client is not None:
            return await client.call(Ops.list(labels))
        async with AsyncClient(url, api_key) as own:
            return await own.call(Ops.list(labels))

    async def refresh(self) -> SandboxInfo:
        """Fetch the sandbox's record again (its state may have changed)."""
        self._info = await self.client.call(Ops.get(self.id))
        return self._info

    # -- network ----------------------------------------------------------------

    async def set_network(
        self, *, internet: bool = True, allow: Sequence[str] | None = None
    ) -> NetworkPolicy:
        """Replace the egress policy: public internet on or off, plus ``allow`` (CIDRs and
        domain names) reachable either way. New connections follow it at once."""
        policy = NetworkPolicy(internet=internet, allow=list(allow or []))
        self._info = await self.client.call(Ops.set_network(self.id, policy))
        return self._info.network

    # -- ports ------------------------------------------------------------------

    async def expose(self, port: int) -> PortInfo:
        """Reach guest TCP ``port`` from the server's host; asking again returns the same."""
        return await self.client.call(Ops.expose(self.id, port))

    async def unexpose(self, port: int) -> None:
        """Close the host side of an exposed port (NotFound if it was not exposed)."""
        await self.client.call(Ops.unexpose(self.id, port))

    async def ports(self) -> builtins.list[PortInfo]:
        """The exposed ports and their host addresses."""
        return await self.client.call(Ops.ports(self.id))

    def proxy_url(self, port: int, path: str = "") -> str:
        """The server's HTTP proxy to ``port`` (send the API key with each request)."""
        return f"{self.client.config.url}/api/v1/sandboxes/{self.id}/ports/{port}/proxy/{path}"

    # -- snapshots --------------------------------------------------------------

    async def pause(self) -> SandboxInfo:
        """Stop the VM's CPUs; memory and processes stay as they are."""
        self._info = await self.client.call(Ops.pause(self.id))
        return self._info

    async def resume(self) -> SandboxInfo:
        """Let a paused sandbox run on, or bring a hibernated one back (same id, files,
        processes, ports)."""
        self._info = await self.client.call(Ops.resume(self.id))
        return self._info

    async def hibernate(self) -> SandboxInfo:
        """Save the sandbox to disk (memory, processes, disk) and end its VM, freeing its
        RAM and CPU; :meth:`resume`, or any call with ``auto_resume``, brings it back."""
        self._info = await self.client.call(Ops.hibernate(self.id))
        return self._info

    async def set_timeout(
        self,
        timeout_s: Timeout = NOT_GIVEN,
        *,
        on_timeout: TimeoutAction | None = None,
        idle_timeout_s: Timeout = NOT_GIVEN,
        on_idle: TimeoutAction | None = None,
        auto_resume: bool | None = None,
    ) -> SandboxInfo:
        """Change the timeouts: ``timeout_s`` counts from now (None: no timeout), as does
        ``idle_timeout_s``; what is not given stays as it was."""
        changes: dict[str, Any] = {
            k: v
            for k, v in (("timeout_s", timeout_s), ("idle_timeout_s", idle_timeout_s))
            if v is not NOT_GIVEN
        }
        for key, value in (
            ("on_timeout", on_timeout), ("on_idle", on_idle), ("auto_resume", auto_resume)
        ):  # fmt: skip
            if value is not None:
                changes[key] = value
        self._info = await self.client.call(Ops.set_timeout(self.id, changes))
        return self._info

    async def snapshot(
        self,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        ttl_s: float | None = None,
    ) -> SnapshotInfo:
        """Save memory, processes and disk; the sandbox keeps running. ``ttl_s``: the
        snapshot is deleted that long from now, once no sandbox or snapshot uses it."""
        return await self.client.call(Ops.snapshot(self.id, name, labels, ttl_s))

    async def fork(
        self, count: int = 1, *, labels: Mapping[str, str] | None = None
    ) -> builtins.list[AsyncSandbox]:
        """``count`` running copies of this sandbox (sharing this client)."""
        infos = await self.client.call(Ops.fork(self.id, count, labels))
        return [type(self)(info, self.client, keep=self.keep) for info in infos]

    @classmethod
    async def restore(
        cls,
        snapshot_id: str,
        *,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        hostname: str | None = None,
        timeout_s: float | None = None,
        on_timeout: TimeoutAction | None = None,
        idle_timeout_s: float | None = None,
        on_idle: TimeoutAction | None = None,
        auto_resume: bool | None = None,
        internet: bool | None = None,
        allow: Sequence[str] | None = None,
        prefer_node: str | None = None,
        keep: bool = False,
        client: AsyncClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncSandbox:
        """A new running sandbox from a snapshot; the original needn't exist any more.

        Its egress policy is the snapshotted sandbox's unless ``internet``/``allow`` say;
        the timeouts are as for :meth:`create`. ``prefer_node``: against a cluster's
        gateway, restore there (the snapshot is copied over first if need be)."""
        owned = client is None
        client = client or AsyncClient(url, api_key)
        call = Ops.restore(
            snapshot_id,
            labels=labels,
            env=env,
            hostname=hostname,
            timeout_s=timeout_s,
            network=network_policy(internet, allow),
            timeouts={
                "on_timeout": on_timeout,
                "idle_timeout_s": idle_timeout_s,
                "on_idle": on_idle,
                "auto_resume": auto_resume,
            },
            prefer_node=prefer_node,
        )
        try:
            info = await client.call(call)
        except BaseException:
            if owned:
                await client.close()
            raise
        return cls(info, client, keep=keep, owns_client=owned)

    @staticmethod
    async def list_snapshots(
        templates: bool = False,
        *,
        client: AsyncClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Every snapshot on the server (``parent_id`` links them into a tree)."""
        if client is not None:
            return await client.call(Ops.list_snapshots(templates))
        async with AsyncClient(url, api_key) as own:
            return await own.call(Ops.list_snapshots(templates))

    @staticmethod
    async def delete_snapshot(
        snapshot_id: str,
        *,
        subtree: bool = False,
        client: AsyncClient | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """Delete a snapshot, with ``subtree`` every snapshot descended from it too (refused,
        nothing deleted, while a sandbox or another snapshot builds on one of them)."""
        if client is not None:
            return await client.call(Ops.delete_snapshot(snapshot_id, subtree))
        async with AsyncClient(url, api_key) as own:
            return await own.call(Ops.delete_snapshot(snapshot_id, subtree))

    @overload
    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        user: str | int | None = ...,
        timeout: float | None = ...,
        stdin: bytes | str | None = ...,
        on_stdout: AsyncOutputCallback | None = ...,
        on_stderr: AsyncOutputCallback | None = ...,
        background: Literal[False] = ...,
    ) -> CommandResult: ...

    @overload
    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        user: str | int | None = ...,
        timeout: float | None = ...,
        stdin: bytes | str | None = ...,
        on_stdout: AsyncOutputCallback | None = ...,
        on_stderr: AsyncOutputCallback | None = ...,
        background: Literal[True],
    ) -> AsyncProcessHandle: ...

    async def exec(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
        timeout: float | None = None,
        stdin: bytes | str | None = None,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        background: bool = False,
    ) -> CommandResult | AsyncProcessHandle:
        """Run a command (a string runs in a shell, a list is an argv).

        Returns its :class:`CommandResult`; with ``on_stdout``/``on_stderr``
        (plain or async functions) the output is handed over as it comes; with
        ``background=True`` it returns an :class:`AsyncProcessHandle` at once.
        """
        if background:
            return await self.process.start(cmd, env=env, cwd=cwd, user=user, timeout=timeout)
        if on_stdout is None and on_stderr is None:
            call = Ops.exec(self.id, cmd, env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin)
            return await self.client.call(call)
        first = start_message(
            cmd, env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin is not None
        )
        stream = await _Streamed.open(self.client, self.id, first, capture=True)
        try:
            if stdin is not None:
                await stream.send(stdin)
                await stream.control("eof")
            return await stream.finish(on_stdout, on_stderr)
        finally:
            await stream.close()

    async def pty(
        self,
        cmd: str | Sequence[str] | None = None,
        *,
        cols: int = 80,
        rows: int = 24,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | int | None = None,
    ) -> AsyncPty:
        """An interactive terminal running ``cmd`` (default: a login shell)."""
        env = {"TERM": "xterm-256color", **(env or {})}
        first = start_message(
            cmd or DEFAULT_SHELL, env=env, cwd=cwd, user=user, pty=True, cols=cols, rows=rows
        )
        return AsyncPty(await _Streamed.open(self.client, self.id, first, capture=False))

    async def run_code(
        self,
        code: str,
        context: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = CODE_TIMEOUT_S,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
    ) -> Execution:
        """Run Python in the sandbox's Jupyter kernel (image ``code-interpreter``), which
        keeps its names and imports from one call to the next.

        ``context`` names another kernel of the sandbox (an id of the E2B API's code
        contexts); ``env`` is set for this run only; after ``timeout`` seconds the cell is
        interrupted (its :class:`Execution` then has a ``TimeoutError``). What it prints
        is handed to ``on_stdout``/``on_stderr`` (bytes) as it comes; figures come back in
        ``results`` as PNG bytes (:attr:`Execution.images`), with their chart data.
        """
        builder = ExecutionBuilder()
        call = run_code_call(self.id, code, context=context, env=env, timeout=timeout)
        async with self.client.stream(call) as response:
            async for line in response.aiter_lines():
                if (out := builder.feed(line)) is not None:
                    kind, text = out
                    await call_back(on_stdout if kind == "stdout" else on_stderr, text.encode())
        return builder.result()

    async def metrics(self) -> SandboxMetrics:
        """What the sandbox uses now (host CPU and memory, the guest's memory, disk and
        network bytes) and the host-side samples of the last minutes."""
        return await self.client.call(Ops.metrics(self.id))

    async def logs(self, limit: int = 256 * 1024) -> str:
        """The tail of the VM's serial console."""
        return await self.client.call(Ops.logs(self.id, limit))

    async def kill(self) -> None:
        """Delete the sandbox: its VM stops and its disk is removed."""
        await self.client.call(Ops.delete(self.id))

    async def close(self) -> None:
        """Release the connection (the sandbox itself keeps running)."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.keep:
                with contextlib.suppress(SandboxNotFound):
                    await self.kill()
        finally:
            await self.close()

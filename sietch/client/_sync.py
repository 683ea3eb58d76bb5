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
from websockets import ConnectionClosedOK, InvalidHandshake, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection

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
from sietch.client._io_sync import (
    Data,
    OutputCallback,
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


class Client:
    """One connection pool to a Sietch server; sandboxes made through it share it."""

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
        self._http = httpx.Client(**self.config.http_options())

    def call(self, call: Call[T]) -> T:
        """Send one API request and return its parsed answer (raising typed errors); a
        refusal for now (429, 503) is retried as :class:`~sietch.client._core.RetryPolicy` says."""
        backoff, options = Backoff(self.config.retry), call.request_options()
        while True:
            try:
                response = self._http.request(call.method, call.path, **options)
            except httpx.TransportError as exc:
                raise transport_error(exc, self.config) from exc
            if (wait := backoff.after(response)) is None:
                break
            sleep(wait)
        check_response(response)
        return call.parse(response)

    @contextlib.contextmanager
    def stream(self, call: Call[Any], content: Any = None) -> Iterator[httpx.Response]:
        """Send a request whose body or answer is streamed (retried like :meth:`call` when
        the body is bytes or none: a streamed body can be sent only once)."""
        backoff = Backoff(self.config.retry)
        while True:
            request = self._http.build_request(
                call.method, call.path, content=content, **call.request_options()
            )
            try:
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                raise transport_error(exc, self.config) from exc
            if not response.is_error:
                break
            response.read()
            replayable = content is None or isinstance(content, bytes)
            if not replayable or (wait := backoff.after(response)) is None:
                break
            response.close()
            sleep(wait)
        try:
            check_response(response)
            yield response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config) from exc
        finally:
            response.close()

    def websocket(self, path: str) -> ClientConnection:
        """Open an API WebSocket; a handshake refused for now is retried like :meth:`call`."""
        backoff = Backoff(self.config.retry)
        while True:
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
                refused = handshake_error(exc.response.status_code, exc.response.body)
                if (wait := backoff.delay(refused)) is None:
                    raise refused from exc
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                raise Unavailable(f"cannot open a WebSocket to {self.config.url}: {exc}") from exc
            sleep(wait)

    @property
    def images(self) -> Images:
        """Build, import, list and remove images (``client.images.build(...)``)."""
        return Images(self)

    def info(self) -> ServerInfo:
        """The server's version, accelerator and limits."""
        return self.call(Ops.info())

    def tenant(self) -> TenantInfo:
        """The key's tenant, its quota and what it uses now."""
        return self.call(Ops.tenant())

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
        """Input for the command, dropped once it has ended, as a pipe's or a closed
        terminal's would be: the server closes the stream as the command ends, which can
        be before this is sent (:meth:`finish` still reads the result sent before)."""
        with contextlib.suppress(ConnectionClosedOK):
            self.ws.send(as_bytes(data))

    def control(self, kind: str, **fields: Any) -> None:
        """Like :meth:`send`: nothing to resize or signal once the command has ended."""
        with contextlib.suppress(ConnectionClosedOK):
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


class Desktop:
    """``sb.desktop``: the screen, mouse and keyboard of a sandbox made from a desktop
    image: computer use (coordinates are the screen's pixels; every action returns the
    server's JSON answer, with ``screenshot`` (base64 PNG) when asked for), and
    :meth:`url`, a live view for a person in a browser (noVNC)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def screenshot(
        self,
        *,
        format: Literal["png", "jpeg", "webp"] = "png",
        region: tuple[int, int, int, int] | None = None,
        scale: float | None = None,
        quality: int | None = None,
    ) -> bytes:
        """The screen now, as image bytes; ``region`` is (x, y, width, height)."""
        call = DesktopOps.screenshot(self._sb.id, format, region, scale, quality)
        return self._sb.client.call(call)

    def act(self, action: str, **fields: Any) -> dict[str, Any]:
        """Any action by name (``act("click", x=1, y=2)``); the methods below are shorthands."""
        return self._sb.client.call(DesktopOps.act(self._sb.id, action, fields))

    def move(self, x: int, y: int) -> dict[str, Any]:
        return self.act("move", x=x, y=y)

    def click(
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
        return self.act("click", x=x, y=y, screenshot=screenshot, **fields)

    def double_click(self, x: int | None = None, y: int | None = None) -> dict[str, Any]:
        return self.click(x, y, count=2)

    def right_click(self, x: int | None = None, y: int | None = None) -> dict[str, Any]:
        return self.click(x, y, button="right")

    def mouse_down(self, button: Button = "left") -> dict[str, Any]:
        return self.act("mouse_down", button=button)

    def mouse_up(self, button: Button = "left") -> dict[str, Any]:
        return self.act("mouse_up", button=button)

    def drag(self, path: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """Press at the first point, move through the others, release at the last."""
        return self.act("drag", path=[list(p) for p in path])

    def scroll(
        self,
        direction: Literal["up", "down", "left", "right"] = "down",
        amount: int = 3,
        x: int | None = None,
        y: int | None = None,
    ) -> dict[str, Any]:
        return self.act("scroll", direction=direction, amount=amount, x=x, y=y)

    def key(self, keys: str) -> dict[str, Any]:
        """xdotool key names: ``"Return"``, ``"ctrl+l"``, several separated by spaces."""
        return self.act("key", keys=keys)

    def hold_key(self, keys: str, duration: float) -> dict[str, Any]:
        return self.act("hold_key", keys=keys, duration=duration)

    def type(self, text: str, *, delay_ms: int | None = None) -> dict[str, Any]:
        return self.act("type", text=text, delay_ms=delay_ms)

    def wait(self, duration: float) -> dict[str, Any]:
        return self.act("wait", duration=duration)

    def cursor_position(self) -> tuple[int, int]:
        answer = self.act("cursor_position")
        return answer["x"], answer["y"]

    def screen_size(self) -> tuple[int, int]:
        answer = self.act("screen_size")
        return answer["width"], answer["height"]

    def open_url(self, url: str) -> dict[str, Any]:
        """Open ``url`` in the desktop's Chromium (a new tab once it runs)."""
        return self.act("open_url", url=url)

    def launch(self, *command: str) -> dict[str, Any]:
        """Start an application as the desktop's user: ``launch("xfce4-terminal")``."""
        return self.act("launch", command=list(command))

    def windows(self) -> dict[str, Any]:
        """``{"windows": [{id, title, pid, x, y, width, height, desktop}], "active": ...}``."""
        return self.act("windows")

    def clipboard_get(self) -> str:
        return str(self.act("clipboard_get")["text"])

    def clipboard_set(self, text: str) -> dict[str, Any]:
        return self.act("clipboard_set", text=text)

    def anthropic(
        self,
        tool_input: dict[str, Any],
        *,
        display_width: int | None = None,
        display_height: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Run an input of Anthropic's computer tool; the ``content`` of its tool_result."""
        call = DesktopOps.tool(self._sb.id, "anthropic", tool_input, display_width, display_height)
        return self._sb.client.call(call)

    def openai(
        self,
        action: dict[str, Any],
        *,
        display_width: int | None = None,
        display_height: int | None = None,
    ) -> dict[str, Any]:
        """Run an OpenAI computer_use_preview action (or computer_call); its
        ``computer_call_output``."""
        call = DesktopOps.tool(self._sb.id, "openai", action, display_width, display_height)
        return self._sb.client.call(call)

    def url(self, *, view_only: bool = False, ttl: float | None = None) -> DesktopView:
        """A viewer link, valid ``ttl`` seconds (server default: an hour); ``view_only``
        lets the person watch but not type or click. Also the VNC password and screen size."""
        return self._sb.client.call(Ops.desktop_view(self._sb.id, view_only, ttl))

    def revoke(self) -> int:
        """End every viewer link of the sandbox and the browser sessions they opened."""
        return self._sb.client.call(Ops.revoke_links(self._sb.id, "desktop"))


class Ide:
    """``sb.ide``: code-server (VS Code) in the sandbox, in a browser through the server."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def url(self, *, folder: str | None = None, ttl: float | None = None) -> str:
        """A link that opens ``folder`` (default ``/home/user``), valid ``ttl`` seconds."""
        return self._sb.client.call(Ops.ide_url(self._sb.id, folder, ttl))

    def revoke(self) -> int:
        """End every IDE link of the sandbox and the browser sessions they opened."""
        return self._sb.client.call(Ops.revoke_links(self._sb.id, "ide"))


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
        self.desktop = Desktop(self)
        self.ide = Ide(self)

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
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
        request_timeout: Timeout = NOT_GIVEN,
    ) -> Sandbox:
        """Boot a new sandbox (``None`` = the server's default for that setting).

        ``timeout_s`` after creation ``on_timeout`` happens: ``"kill"`` (the default)
        deletes it, ``"pause"`` stops its CPUs, ``"hibernate"`` saves it to disk and ends
        its VM; ``idle_timeout_s`` does ``on_idle`` (default ``"hibernate"``) once
        nothing has used it that long. With ``auto_resume`` (the default) any call to a
        paused or hibernated sandbox wakes it. ``keep=True`` keeps it when the
        ``with`` block ends. ``internet`` and ``allow`` set its egress policy (see
        :meth:`set_network`). ``resolution`` (width, height) and ``dpi`` size a desktop
        image's screen. ``prefer_node``: against a cluster's gateway, the node to put it on
        if that one has room (e.g. the caller's own); elsewhere otherwise.
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
        """Let a paused sandbox run on, or bring a hibernated one back (same id, files,
        processes, ports)."""
        self._info = self.client.call(Ops.resume(self.id))
        return self._info

    def hibernate(self) -> SandboxInfo:
        """Save the sandbox to disk (memory, processes, disk) and end its VM, freeing its
        RAM and CPU; :meth:`resume`, or any call with ``auto_resume``, brings it back."""
        self._info = self.client.call(Ops.hibernate(self.id))
        return self._info

    def set_timeout(
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
        self._info = self.client.call(Ops.set_timeout(self.id, changes))
        return self._info

    def snapshot(
        self,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        ttl_s: float | None = None,
    ) -> SnapshotInfo:
        """Save memory, processes and disk; the sandbox keeps running. ``ttl_s``: the
        snapshot is deleted that long from now, once no sandbox or snapshot uses it."""
        return self.client.call(Ops.snapshot(self.id, name, labels, ttl_s))

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
        on_timeout: TimeoutAction | None = None,
        idle_timeout_s: float | None = None,
        on_idle: TimeoutAction | None = None,
        auto_resume: bool | None = None,
        internet: bool | None = None,
        allow: Sequence[str] | None = None,
        prefer_node: str | None = None,
        keep: bool = False,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Sandbox:
        """A new running sandbox from a snapshot; the original needn't exist any more.

        Its egress policy is the snapshotted sandbox's unless ``internet``/``allow`` say;
        the timeouts are as for :meth:`create`. ``prefer_node``: against a cluster's
        gateway, restore there (the snapshot is copied over first if need be)."""
        owned = client is None
        client = client or Client(url, api_key)
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
        subtree: bool = False,
        client: Client | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> None:
        """Delete a snapshot, with ``subtree`` every snapshot descended from it too (refused,
        nothing deleted, while a sandbox or another snapshot builds on one of them)."""
        if client is not None:
            return client.call(Ops.delete_snapshot(snapshot_id, subtree))
        with Client(url, api_key) as own:
            return own.call(Ops.delete_snapshot(snapshot_id, subtree))

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

    def run_code(
        self,
        code: str,
        context: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = CODE_TIMEOUT_S,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
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
        with self.client.stream(call) as response:
            for line in response.iter_lines():
                if (out := builder.feed(line)) is not None:
                    kind, text = out
                    call_back(on_stdout if kind == "stdout" else on_stderr, text.encode())
        return builder.result()

    def metrics(self) -> SandboxMetrics:
        """What the sandbox uses now (host CPU and memory, the guest's memory, disk and
        network bytes) and the host-side samples of the last minutes."""
        return self.client.call(Ops.metrics(self.id))

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

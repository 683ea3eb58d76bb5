"""envd, E2B's in-sandbox daemon, served by the host: Connect RPC (``process.Process``,
``filesystem.Filesystem``) and HTTP (``/files``, ``/health``) on Sietch's agent.

:class:`.routing.SandboxTraffic` puts the sandbox id in front of the path; every route
checks the sandbox's access token first (:func:`.access.check_token`). A process started
here runs on the agent as any exec does: when the client drops the stream, the command
lives on in the background, and ``Connect`` attaches to it again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import posixpath
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.requests import HTTPConnection

from sietch.agent import protocol
from sietch.core.live import Execution, LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import CommandResult, FileInfo, SandboxState
from sietch.errors import (
    FileExists,
    FileNotFound,
    InvalidArgument,
    NotFound,
    ProcessNotFound,
    SietchError,
)
from sietch.server.deps import ManagerDep, SettingsDep
from sietch.server.e2b import connect
from sietch.server.e2b.access import check_token
from sietch.server.e2b.routing import PREFIX
from sietch.server.e2b.watch import POLL_S, Watch, watchers
from sietch.server.middleware import content_length
from sietch.server.schemas import check_guest_path

log = logging.getLogger(__name__)


async def _authorized(conn: HTTPConnection, sandbox_id: str) -> None:
    check_token(conn, sandbox_id)


router = APIRouter(
    prefix=PREFIX + "/{sandbox_id}",
    tags=["e2b-envd"],
    include_in_schema=False,
    dependencies=[Depends(_authorized)],
)

HOME = "/root"
"""Where relative paths point when the image names no working directory."""
Message = dict[str, Any]

_executions: dict[tuple[str, int], Execution] = {}
"""The open Start/Connect streams, for SendInput, CloseStdin and Update on their pid."""


def _user(request: Request) -> str | None:
    """envd's user: the name in HTTP Basic auth (``user:``), or the ``username`` query."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and value:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            return base64.b64decode(value).decode().partition(":")[0] or None
    return request.query_params.get("username") or None


def _path(sandbox: LiveSandbox, path: Any) -> str:
    """An absolute guest path: a relative one (or ``~``) is under the sandbox's directory."""
    if not isinstance(path, str) or not path:
        raise InvalidArgument("a path is required")
    home = sandbox.info.cwd or HOME
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    return check_guest_path(posixpath.normpath(posixpath.join(home, path)))


# -- the call shapes: unary JSON, and server streams ------------------------------------

Handler = Callable[[Request, Manager, str, Message], Awaitable[Message]]


def unary(name: str) -> Callable[[Handler], Handler]:
    """Register a unary Connect method: JSON in, JSON out, an error as its status."""

    def register(handler: Handler) -> Handler:
        async def endpoint(sandbox_id: str, request: Request, manager: ManagerDep) -> Response:
            try:
                message = await connect.unary_request(request)
                return JSONResponse(await handler(request, manager, sandbox_id, message))
            except SietchError as exc:
                return connect.unary_error(exc)

        router.add_api_route(f"/{name}", endpoint, methods=["POST"], name=name)
        return handler

    return register


# -- process.Process ----------------------------------------------------------------------


def _selected_pid(sandbox: LiveSandbox, message: Message) -> int | None:
    selector = message.get("process") or {}
    pid = selector.get("pid")
    if pid is not None:
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise InvalidArgument("process.pid is a number")
        return pid
    return None


async def _pid(sandbox: LiveSandbox, message: Message) -> int:
    """The pid a ``ProcessSelector`` names (by pid, or by tag among the running ones)."""
    pid = _selected_pid(sandbox, message)
    if pid is not None:
        return pid
    tag = (message.get("process") or {}).get("tag")
    if not isinstance(tag, str):
        raise InvalidArgument("select a process by pid or tag")
    for proc in await sandbox.processes():
        if proc.tag == tag and proc.running:
            return proc.pid
    raise ProcessNotFound(f"no running process tagged {tag!r}")


def _event(kind: str, body: Message) -> Message:
    return {"event": {kind: body}}


async def _events(
    manager: Manager, sandbox_id: str, execution: Execution, pty: bool
) -> AsyncGenerator[Message | connect.Last]:
    """A running command as envd's events: start, data (base64), end.

    The output is read as the client takes it, so a slow client slows the command's
    output (the agent's flow control) rather than filling memory.
    """
    key = (sandbox_id, execution.pid)
    _executions[key] = execution
    out = "pty" if pty else "stdout"
    try:
        with manager.activity.busy(sandbox_id):
            yield _event("start", {"pid": execution.pid})
            async for chunk in execution:
                channel = "stderr" if chunk.channel == protocol.CHANNEL_STDERR else out
                yield _event("data", {channel: base64.b64encode(chunk.data).decode()})
            yield connect.Last(_event("end", _end(execution.ended())))
    finally:
        if _executions.get(key) is execution:
            del _executions[key]
        await execution.close()


def _end(result: CommandResult) -> Message:
    """envd's ``EndEvent``: Go's exit status wording; a signal's death is exit code -1."""
    if result.exit_code is not None:
        end: Message = {
            "exitCode": result.exit_code,
            "exited": True,
            "status": f"exit status {result.exit_code}",
        }
    else:
        end = {"exitCode": -1, "exited": False, "status": f"signal: {result.signal}"}
    if result.timed_out:
        end["error"] = "the command timed out (SIETCH_EXEC_TIMEOUT_S)"
    return end


async def _streamed(
    request: Request,
    starting: Callable[[Message], Awaitable[tuple[Execution, bool]]],
    manager: Manager,
    sandbox_id: str,
) -> Response:
    """A server-streamed call: its request read first (the response's own task listens for
    the client's disconnect, so the body can't be read from inside the stream); a malformed
    one is a 4xx before any stream starts."""
    try:
        message = await connect.stream_request(request)
    except SietchError as exc:
        return connect.unary_error(exc)

    async def events() -> AsyncGenerator[Message | connect.Last]:
        execution, pty = await starting(message)
        async with contextlib.aclosing(_events(manager, sandbox_id, execution, pty)) as stream:
            async for event in stream:
                yield event

    return connect.ConnectStream(events())


@router.post("/process.Process/Start", name="process-start")
async def process_start(
    sandbox_id: str, request: Request, manager: ManagerDep, settings: SettingsDep
) -> Response:
    """Start a command and stream its events (``/bin/bash -l -c CMD`` from the SDK)."""

    async def starting(message: Message) -> tuple[Execution, bool]:
        config = message.get("process") or {}
        cmd = config.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            raise InvalidArgument("process.cmd is required")
        args = config.get("args") or []
        size = (message.get("pty") or {}).get("size") if "pty" in message else None
        pty = size is not None
        async with manager.use(sandbox_id) as sandbox:
            cwd = config.get("cwd")
            execution = await sandbox.start(
                [cmd, *args],
                stdin=bool(message.get("stdin")) or pty,
                pty=pty,
                cols=(size or {}).get("cols"),
                rows=(size or {}).get("rows"),
                env=config.get("envs") or None,
                cwd=_path(sandbox, cwd) if cwd else None,
                user=_user(request),
                tag=message.get("tag"),
                timeout=settings.exec_timeout_s,
            )
        return execution, pty

    return await _streamed(request, starting, manager, sandbox_id)


@router.post("/process.Process/Connect", name="process-connect")
async def process_connect(sandbox_id: str, request: Request, manager: ManagerDep) -> Response:
    """Attach to a running command: its output so far, then as it comes, then its end."""

    async def starting(message: Message) -> tuple[Execution, bool]:
        async with manager.use(sandbox_id) as sandbox:
            pid = await _pid(sandbox, message)
            pty = any(p.pty for p in await sandbox.processes() if p.pid == pid)
            return await sandbox.attach(pid), pty

    return await _streamed(request, starting, manager, sandbox_id)


@unary("process.Process/List")
async def process_list(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    async with manager.use(sandbox_id) as sandbox:
        processes = await sandbox.processes()
    listed = []
    for proc in processes:
        if not proc.running:
            continue
        argv = proc.argv or ["/bin/sh", "-c", proc.cmd or ""]
        info: Message = {"pid": proc.pid, "config": {"cmd": argv[0], "args": argv[1:], "envs": {}}}
        if proc.tag is not None:
            info["tag"] = proc.tag
        listed.append(info)
    return {"processes": listed}


def _open(sandbox_id: str, pid: int) -> Execution:
    execution = _executions.get((sandbox_id, pid))
    if execution is None:
        raise ProcessNotFound(f"process {pid} has no open stream here to take input")
    return execution


@unary("process.Process/SendInput")
async def process_send_input(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    async with manager.use(sandbox_id) as sandbox:
        pid = await _pid(sandbox, message)
    await _open(sandbox_id, pid).send_stdin(_input(message))
    return {}


def _input(message: Message) -> bytes:
    """The bytes of a message's ``input`` (``ProcessInput``: stdin or pty, base64)."""
    given = message.get("input") or {}
    data = given.get("stdin", given.get("pty"))
    if not isinstance(data, str):
        raise InvalidArgument("input.stdin or input.pty (base64) is required")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise InvalidArgument("input is not base64") from None


@router.post("/process.Process/StreamInput", name="process-stream-input")
async def process_stream_input(sandbox_id: str, request: Request, manager: ManagerDep) -> Response:
    """Client streaming: a ``start`` event naming the process, then ``data`` events whose
    input goes to it in order as they arrive (``keepalive`` events are skipped)."""
    try:
        messages = connect.client_stream(request)
        empty: Message = {}
        start = (await anext(messages, empty)).get("start")
        if not isinstance(start, dict):
            raise InvalidArgument("a StreamInput stream starts with a start event (process)")
        async with manager.use(sandbox_id) as sandbox:
            pid = await _pid(sandbox, start)
        execution = _open(sandbox_id, pid)
        async for message in messages:
            data = message.get("data")
            if isinstance(data, dict):
                await execution.send_stdin(_input(data))
    except SietchError as exc:
        return connect.stream_failure(exc)
    return connect.client_stream_reply({})


@unary("process.Process/CloseStdin")
async def process_close_stdin(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    async with manager.use(sandbox_id) as sandbox:
        pid = await _pid(sandbox, message)
    await _open(sandbox_id, pid).close_stdin()
    return {}


@unary("process.Process/Update")
async def process_update(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    """A PTY's new size."""
    async with manager.use(sandbox_id) as sandbox:
        pid = await _pid(sandbox, message)
    size = (message.get("pty") or {}).get("size") or {}
    cols, rows = size.get("cols"), size.get("rows")
    if not isinstance(cols, int) or not isinstance(rows, int):
        raise InvalidArgument("pty.size.cols and pty.size.rows are required")
    await _open(sandbox_id, pid).resize(cols, rows)
    return {}


_SIGNALS = {"SIGNAL_SIGKILL": "SIGKILL", "SIGNAL_SIGTERM": "SIGTERM", 9: "SIGKILL", 15: "SIGTERM"}


@unary("process.Process/SendSignal")
async def process_send_signal(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    sig = _SIGNALS.get(message.get("signal"))  # type: ignore[arg-type]
    if sig is None:
        raise InvalidArgument(f"unknown signal {message.get('signal')!r}")
    async with manager.use(sandbox_id) as sandbox:
        await sandbox.signal(await _pid(sandbox, message), sig)
    return {}


# -- filesystem.Filesystem ----------------------------------------------------------------

_TYPES = {"file": "FILE_TYPE_FILE", "dir": "FILE_TYPE_DIRECTORY", "symlink": "FILE_TYPE_SYMLINK"}


def entry(info: FileInfo) -> Message:
    """Sietch's file record as envd's ``EntryInfo`` (int64 as a string, as protobuf JSON)."""
    out: Message = {
        "name": info.name,
        "type": _TYPES.get(info.type, "FILE_TYPE_UNSPECIFIED"),
        "path": info.path,
        "size": str(info.size),
        "mode": info.mode,
        "permissions": stat.filemode(info.mode | _KIND_BITS.get(info.type, 0)),
        "modifiedTime": datetime.fromtimestamp(info.mtime, UTC).isoformat().replace("+00:00", "Z"),
    }
    if info.target is not None:
        out["symlinkTarget"] = info.target
    return out


_KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}


@unary("filesystem.Filesystem/Stat")
async def fs_stat(request: Request, manager: Manager, sandbox_id: str, message: Message) -> Message:
    async with manager.use(sandbox_id) as sandbox:
        return {"entry": entry(await sandbox.stat(_path(sandbox, message.get("path"))))}


@unary("filesystem.Filesystem/ListDir")
async def fs_list_dir(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    depth = message.get("depth") or 1
    if not isinstance(depth, int) or depth < 1:
        raise InvalidArgument("depth is a positive number")
    async with manager.use(sandbox_id) as sandbox:
        entries = await sandbox.list_dir(_path(sandbox, message.get("path")), depth)
    return {"entries": [entry(e) for e in entries]}


@unary("filesystem.Filesystem/MakeDir")
async def fs_make_dir(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    """Make a directory and its parents; ``already_exists`` if it is there (the SDK's
    ``make_dir`` then returns False)."""
    async with manager.use(sandbox_id) as sandbox:
        path = _path(sandbox, message.get("path"))
        with contextlib.suppress(FileNotFound):
            await sandbox.stat(path)
            raise FileExists(f"{path} already exists")
        await sandbox.mkdir(path, parents=True)
        return {"entry": entry(await sandbox.stat(path))}


@unary("filesystem.Filesystem/Move")
async def fs_move(request: Request, manager: Manager, sandbox_id: str, message: Message) -> Message:
    async with manager.use(sandbox_id) as sandbox:
        source = _path(sandbox, message.get("source"))
        destination = _path(sandbox, message.get("destination"))
        await sandbox.rename(source, destination, overwrite=True)
        return {"entry": entry(await sandbox.stat(destination))}


@unary("filesystem.Filesystem/Remove")
async def fs_remove(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    async with manager.use(sandbox_id) as sandbox:
        await sandbox.remove(_path(sandbox, message.get("path")), recursive=True)
    return {}


# -- HTTP: /files and /health -------------------------------------------------------------


def http_error(exc: SietchError) -> JSONResponse:
    """envd's HTTP error body: ``{"code": <status>, "message"}``."""
    return JSONResponse({"code": exc.status, "message": exc.message}, status_code=exc.status)


@router.get("/health", name="health")
async def health(sandbox_id: str) -> Response:
    """204: the sandbox is there (:class:`.routing.SandboxTraffic` answers 502 otherwise)."""
    return Response(status_code=204)


@router.get("/files", name="files-read")
async def files_read(
    sandbox_id: str, manager: ManagerDep, path: Annotated[str, Query()]
) -> Response:
    """A file's bytes, streamed out of the guest.

    Chunked, with no ``Content-Length``: the stat's size is stale as soon as the file
    changes, and a body shorter than its length is a protocol error for the client
    (a counter rewriting its file did that to the SDK's reads)."""
    try:
        async with manager.use(sandbox_id) as sandbox:
            guest = _path(sandbox, path)
            info = await sandbox.stat(guest)
        if info.type != "file":
            raise InvalidArgument(f"{guest} is not a file")
    except SietchError as exc:
        return http_error(exc)

    async def body() -> AsyncIterator[bytes]:
        async with manager.use(sandbox_id) as sandbox:
            async for chunk in sandbox.read_file(guest):
                yield chunk

    return StreamingResponse(body(), media_type="application/octet-stream")


@router.post("/files", name="files-write")
async def files_write(
    sandbox_id: str,
    request: Request,
    manager: ManagerDep,
    path: Annotated[str | None, Query()] = None,
) -> Response:
    """Upload one file as ``application/octet-stream``, or files as multipart form parts
    (each named by its part's file name, or by ``path`` when there is one)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        async with manager.use(sandbox_id) as sandbox:
            written = []
            if kind == "multipart/form-data":
                form = await request.form(max_part_size=1 << 30)
                parts = [p for p in form.getlist("file") if isinstance(p, UploadFile)]
                if not parts:
                    raise InvalidArgument("the form has no 'file' part")
                for part in parts:
                    name = path if path and len(parts) == 1 else part.filename
                    guest = _path(sandbox, name)
                    await sandbox.write_file(guest, _chunks(part))
                    written.append(guest)
            else:
                if path is None:
                    raise InvalidArgument("an octet-stream upload names its file in ?path=")
                guest = _path(sandbox, path)
                await sandbox.write_file(
                    guest, request.stream(), size=content_length(request.scope)
                )
                written.append(guest)
    except SietchError as exc:
        return http_error(exc)
    return JSONResponse(
        [{"name": posixpath.basename(p), "type": "file", "path": p} for p in written]
    )


async def _chunks(part: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await part.read(1 << 20):
        yield chunk


# -- directory watches (see .watch) --------------------------------------------------------


async def _watch(manager: Manager, sandbox_id: str, message: Message) -> Watch:
    async with manager.use(sandbox_id) as sandbox:
        path = _path(sandbox, message.get("path"))
        if (await sandbox.stat(path)).type != "dir":
            raise InvalidArgument(f"{path} is not a directory")
        watch = Watch(sandbox_id, path, bool(message.get("recursive")))
        await watch.start(sandbox)
    return watch


@router.post("/filesystem.Filesystem/WatchDir", name="fs-watch-dir")
async def fs_watch_dir(sandbox_id: str, request: Request, manager: ManagerDep) -> Response:
    """A stream of the directory's changes (the async SDK's ``watch_dir``)."""
    try:
        message = await connect.stream_request(request)
    except SietchError as exc:
        return connect.unary_error(exc)
    try:
        watch = await _watch(manager, sandbox_id, message)
    except SietchError as exc:
        return connect.stream_failure(exc)

    async def events() -> AsyncGenerator[Message]:
        yield {"start": {}}
        while True:
            await asyncio.sleep(POLL_S)
            if (await manager.get(sandbox_id)).state is not SandboxState.RUNNING:
                continue  # a watch looks while the sandbox runs: it never wakes one
            async with manager.use(sandbox_id) as sandbox:
                changes = await watch.changes(sandbox)
            for change in changes:
                yield {"filesystem": change}

    return connect.ConnectStream(events())


@unary("filesystem.Filesystem/CreateWatcher")
async def fs_create_watcher(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    watch = await _watch(manager, sandbox_id, message)
    watchers[watch.id] = watch
    return {"watcherId": watch.id}


def _watcher(sandbox_id: str, message: Message) -> Watch:
    watch = watchers.get(message.get("watcherId"))  # type: ignore[arg-type]
    if watch is None or watch.sandbox_id != sandbox_id:
        raise NotFound(f"no watcher {message.get('watcherId')!r}")
    return watch


@unary("filesystem.Filesystem/GetWatcherEvents")
async def fs_get_watcher_events(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    watch = _watcher(sandbox_id, message)
    async with manager.use(sandbox_id) as sandbox:
        return {"events": await watch.changes(sandbox)}


@unary("filesystem.Filesystem/RemoveWatcher")
async def fs_remove_watcher(
    request: Request, manager: Manager, sandbox_id: str, message: Message
) -> Message:
    watchers.pop(_watcher(sandbox_id, message).id)
    return {}

"""Exec over a WebSocket: live output, stdin, PTY resize and signals.

Client -> server, first message (text JSON), one of::

    {"type": "start", "cmd": "...", "env": {}, "cwd": null, "user": null, "timeout": null,
     "pty": false, "cols": 80, "rows": 24, "stdin": false, "encoding": "binary"}
    {"type": "attach", "pid": 42, "encoding": "binary"}      # a background process

Server -> client::

    {"type": "started", "pid": 42}
    output: binary frames, first byte the channel (1 stdout, 2 stderr), then the bytes;
            with "encoding": "base64": {"type": "output", "channel": 1, "data": "<b64>"}
    {"type": "exit", "exit_code": 0, "signal": null, "timed_out": false, "duration_s": 0.1}
    {"type": "error", "error": {"code": "...", "message": "..."}}

then the server closes: 1000 after ``exit``, 4000 + the HTTP status after
``error``. Client -> server while it runs: binary frames are stdin (or
``{"type": "stdin", "data": "<b64>"}``), ``{"type": "eof"}``,
``{"type": "resize", "cols": 120, "rows": 40}``, ``{"type": "signal", "signal": "SIGINT"}``.

A refused connection (bad key, unknown sandbox) gets the API's JSON error as
an HTTP response to the handshake. Closing the socket detaches: the command
keeps running as a background process (list, attach to or kill it through
``/processes`` and ``attach``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from sietch.core.live import Execution
from sietch.core.manager import Manager
from sietch.errors import InvalidArgument, SietchError, ValidationFailed
from sietch.server.deps import admit, require_manager
from sietch.server.handlers import error_body, error_response
from sietch.server.schemas import Command, GuestPath, SafeStr, User
from sietch.server.state import ServerState

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
WsEncoding = Literal["binary", "base64"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StartMessage(_Message):
    type: Literal["start"]
    cmd: Command
    env: dict[SafeStr, SafeStr] = Field(default_factory=dict)
    cwd: GuestPath | None = None
    user: User | None = None
    timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    pty: bool = False
    cols: Annotated[int, Field(ge=1, le=1000)] = 80
    rows: Annotated[int, Field(ge=1, le=1000)] = 24
    stdin: bool = False
    encoding: WsEncoding = "binary"


class AttachMessage(_Message):
    type: Literal["attach"]
    pid: int
    encoding: WsEncoding = "binary"


async def refuse(ws: WebSocket, exc: SietchError) -> None:
    """Answer the handshake with the API's JSON error (or close, if the server can't)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(error_response(exc))
    else:
        await ws.close(4000 + exc.status, exc.message[:120])


async def _fail(ws: WebSocket, exc: SietchError) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json({"type": "error", **error_body(exc.code, exc.message)})
        await ws.close(4000 + exc.status, exc.code)


async def serve_exec_socket(ws: WebSocket, sandbox_id: str) -> None:
    state: ServerState = ws.app.state.sietch
    try:
        await admit(ws)
        manager = require_manager(state)
        # Refuse an unknown or stopped sandbox before accepting; wake a sleeping one.
        await manager.awake(sandbox_id)
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await refuse(ws, exc)
        return
    await ws.accept()
    started = time.perf_counter()
    try:
        with manager.activity.busy(sandbox_id):  # a terminal open keeps it from idling
            execution, encoding = await _begin(ws, manager, sandbox_id, state)
            await _Session(ws, execution, encoding).run()
    except WebSocketDisconnect:
        return
    except SietchError as exc:
        state.metrics.errors.labels(exc.code).inc()
        await _fail(ws, exc)
    except Exception:
        log.exception("exec socket for %s failed", sandbox_id)
        state.metrics.errors.labels("internal").inc()
        await _fail(ws, SietchError("internal server error"))
    else:
        state.metrics.exec_seconds.labels("stream").observe(time.perf_counter() - started)


async def _begin(
    ws: WebSocket, manager: Manager, sandbox_id: str, state: ServerState
) -> tuple[Execution, str]:
    try:
        raw = await asyncio.wait_for(ws.receive_json(), START_TIMEOUT_S)
    except TimeoutError as exc:
        raise InvalidArgument(f"no start message within {START_TIMEOUT_S:g}s") from exc
    except ValueError as exc:  # not JSON
        raise InvalidArgument("the first message must be a JSON start or attach message") from exc
    # The sandbox's lock only while the command starts: a session may last for hours.
    try:
        if isinstance(raw, dict) and raw.get("type") == "attach":
            attach = AttachMessage.model_validate(raw)
            async with manager.use(sandbox_id) as sandbox:
                execution = await sandbox.attach(attach.pid)
            encoding: str = attach.encoding
        else:
            start = StartMessage.model_validate(raw)
            encoding = start.encoding
            async with manager.use(sandbox_id) as sandbox:
                execution = await sandbox.start(
                    start.cmd,
                    stdin=start.stdin,
                    pty=start.pty,
                    cols=start.cols,
                    rows=start.rows,
                    env=start.env or None,
                    cwd=start.cwd,
                    user=start.user,
                    timeout=start.timeout or state.settings.exec_timeout_s,
                )
    except ValidationError as exc:
        raise ValidationFailed(f"bad start message: {exc.errors()[0]['msg']}") from exc
    await ws.send_json({"type": "started", "pid": execution.pid})
    return execution, encoding


class _Session:
    """Pumps output to the socket while a second task feeds input to the command."""

    def __init__(self, ws: WebSocket, execution: Execution, encoding: str) -> None:
        self.ws = ws
        self.execution = execution
        self.encoding = encoding
        self.input_error: SietchError | None = None
        self.client_gone = False

    async def run(self) -> None:
        inputs = asyncio.create_task(self._pump_input(), name="ws-exec-input")
        try:
            result = await self.execution.result(
                on_stdout=self._sender(1), on_stderr=self._sender(2), capture=False
            )
        except SietchError as exc:
            if not self.client_gone:
                await _fail(self.ws, self.input_error or exc)
            return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client went away mid-send
        finally:
            inputs.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await inputs
            await self.execution.close()
        if self.input_error is not None:
            await _fail(self.ws, self.input_error)
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.ws.send_json(
                {
                    "type": "exit",
                    "exit_code": result.exit_code,
                    "signal": result.signal,
                    "timed_out": result.timed_out,
                    "duration_s": result.duration_s,
                }
            )
            if self.ws.application_state is not WebSocketState.DISCONNECTED:
                await self.ws.close(1000)

    def _sender(self, channel: int) -> Any:
        ws = self.ws

        if self.encoding == "base64":

            async def send_b64(data: bytes) -> None:
                await ws.send_json(
                    {"type": "output", "channel": channel, "data": base64.b64encode(data).decode()}
                )

            return send_b64

        prefix = bytes((channel,))

        async def send_binary(data: bytes) -> None:
            await ws.send_bytes(prefix + data)

        return send_binary

    async def _pump_input(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    self.client_gone = True
                    break
                if message.get("bytes") is not None:
                    await self.execution.send_stdin(message["bytes"])
                elif message.get("text") is not None:
                    await self._control(message["text"])
        except SietchError as exc:
            self.input_error = exc
        except WebSocketDisconnect:
            self.client_gone = True
        # The command can't be driven any more: abandon it, which ends the output loop.
        await self.execution.close()

    async def _control(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument("control messages must be JSON") from exc
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "stdin":
            try:
                data = base64.b64decode(msg.get("data", ""), validate=True)
            except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
                raise InvalidArgument("stdin data must be base64") from exc
            await self.execution.send_stdin(data)
        elif kind == "eof":
            await self.execution.close_stdin()
        elif kind == "resize":
            cols, rows = msg.get("cols"), msg.get("rows")
            if not (isinstance(cols, int) and isinstance(rows, int) and cols > 0 and rows > 0):
                raise InvalidArgument("resize needs positive integer cols and rows")
            await self.execution.resize(cols, rows)
        elif kind == "signal":
            sig = msg.get("signal")
            if not isinstance(sig, int | str):
                raise InvalidArgument("signal needs a signal name or number")
            await self.execution.signal(sig)
        else:
            raise InvalidArgument(f"unknown control message type {kind!r}")

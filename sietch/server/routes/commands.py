"""Running commands: one blocking request, or a WebSocket for live output and input."""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, WebSocket

from sietch._util import Capped
from sietch.errors import InvalidArgument
from sietch.server.deps import MetricsDep, SandboxDep, SettingsDep
from sietch.server.exec_ws import serve_exec_socket
from sietch.server.schemas import CommandResult, ExecCreate

router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["exec"])
ws_router = APIRouter(prefix="/sandboxes/{sandbox_id}", tags=["exec"])


def decode_stdin(stdin: str | None, encoding: str) -> bytes | None:
    if stdin is None:
        return None
    if encoding == "base64":
        try:
            return base64.b64decode(stdin, validate=True)
        except ValueError as exc:  # binascii.Error, or characters that are not ASCII
            raise InvalidArgument("stdin is not valid base64") from exc
    return stdin.encode()


def encode_output(data: bytes, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(data).decode()
    return data.decode("utf-8", errors="replace")


@router.post("/exec", name="run", response_model=CommandResult)
async def run_command(
    body: ExecCreate, sandbox: SandboxDep, settings: SettingsDep, metrics: MetricsDep
) -> CommandResult:
    """Run a command to completion; returns its output and exit status."""
    stdin = decode_stdin(body.stdin, body.encoding)
    timeout = body.timeout or settings.exec_timeout_s
    started = time.perf_counter()
    execution = await sandbox.start(
        body.cmd,
        stdin=stdin is not None,
        env=body.env or None,
        cwd=body.cwd,
        user=body.user,
        timeout=timeout,
    )
    out = Capped(settings.max_exec_output_bytes)
    err = Capped(settings.max_exec_output_bytes)
    try:
        if stdin is not None:
            await execution.send_stdin(stdin)
            await execution.close_stdin()
        result = await execution.result(on_stdout=out, on_stderr=err, capture=False)
    finally:
        await execution.close()
    metrics.exec_seconds.labels("blocking").observe(time.perf_counter() - started)
    return CommandResult(
        exit_code=result.exit_code,
        signal=result.signal,
        stdout=encode_output(bytes(out.data), body.encoding),
        stderr=encode_output(bytes(err.data), body.encoding),
        encoding=body.encoding,
        timed_out=result.timed_out,
        truncated=out.truncated or err.truncated,
        duration_s=result.duration_s,
        pid=result.pid,
    )


@ws_router.websocket("/exec/ws", name="stream")
async def exec_socket(sandbox_id: str, websocket: WebSocket) -> None:
    """Live exec; the message protocol is described in :mod:`sietch.server.exec_ws`."""
    await serve_exec_socket(websocket, sandbox_id)

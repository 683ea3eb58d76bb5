"""The Connect protocol with JSON, as far as envd's clients speak it.

Unary calls are plain ``application/json`` both ways; an error is a non-200 status with
``{"code", "message"}``. A server stream answers ``application/connect+json``: envelopes of
a flags byte and a big-endian u32 length, then the message; the last envelope has flag
0x02 and carries ``{}`` or ``{"error": {...}}``, so an error after the first message still
reaches the client (the status is already 200 by then).
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Send

from sietch.errors import InvalidArgument, SietchError

STREAM_TYPE = "application/connect+json"
END_STREAM = 0x02
COMPRESSED = 0x01
MAX_MESSAGE = 1 << 20
"""envd's requests are small JSON; a bigger envelope is refused, not buffered."""

# Sietch's HTTP statuses as Connect codes; Connect's own HTTP statuses for those codes.
_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "already_exists",
    413: "resource_exhausted",
    429: "resource_exhausted",
    501: "unimplemented",
    503: "unavailable",
    504: "deadline_exceeded",
}
_STATUS = {code: status for status, code in _CODES.items()} | {"internal": 500}


def code_of(exc: SietchError) -> str:
    """The Connect code of a Sietch error; a conflict that is not "exists" is a failed
    precondition (a sandbox not running), as envd would say."""
    if exc.status == 409 and exc.code != "file_exists":
        return "failed_precondition"
    return _CODES.get(exc.status, "internal")


def error_json(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def unary_error(exc: SietchError) -> JSONResponse:
    code = code_of(exc)
    return JSONResponse(error_json(code, exc.message), status_code=_STATUS.get(code, 400))


def envelope(message: dict[str, Any], flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def _header(data: bytes | bytearray) -> tuple[int, int]:
    """An envelope's flags and length; refuses compression and oversized messages."""
    flags, length = struct.unpack(">BI", data[:5])
    if flags & COMPRESSED:
        raise InvalidArgument("compressed Connect messages are not supported")
    if length > MAX_MESSAGE:
        raise InvalidArgument(f"Connect messages are at most {MAX_MESSAGE} bytes here")
    return flags, length


def unwrap(body: bytes) -> dict[str, Any]:
    """The one message of a server-stream request body (an envelope)."""
    if len(body) < 5:
        raise InvalidArgument("a Connect stream request is one envelope: 5-byte header first")
    _, length = _header(body)
    if length != len(body) - 5:
        raise InvalidArgument(f"the envelope says {length} bytes but {len(body) - 5} followed it")
    return parse(body[5:])


async def client_stream(request: Request) -> AsyncIterator[dict[str, Any]]:
    """The messages of a client-streaming call as they arrive (the body is a run of
    envelopes; a client's end-of-stream envelope, if it sends one, ends it)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != STREAM_TYPE:
        raise InvalidArgument(f"a client-streaming call is sent as {STREAM_TYPE}")
    pending = bytearray()
    async for chunk in request.stream():
        pending.extend(chunk)
        while len(pending) >= 5:
            flags, length = _header(pending)
            if len(pending) < 5 + length:
                break
            data = bytes(pending[5 : 5 + length])
            del pending[: 5 + length]
            if flags & END_STREAM:
                return
            yield parse(data)
    if pending:
        raise InvalidArgument("the Connect stream ended inside an envelope")


def parse(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data or b"{}")
    except ValueError:
        raise InvalidArgument("the Connect message is not JSON") from None
    if not isinstance(message, dict):
        raise InvalidArgument("a Connect message is a JSON object")
    return message


async def read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_MESSAGE + 5:
            raise InvalidArgument(f"Connect messages are at most {MAX_MESSAGE} bytes here")
    return bytes(body)


async def unary_request(request: Request) -> dict[str, Any]:
    return parse(await read_body(request))


async def stream_request(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != STREAM_TYPE:
        raise InvalidArgument(f"a server-streaming call is sent as {STREAM_TYPE}")
    return unwrap(await read_body(request))


@dataclass(frozen=True)
class Last:
    """A stream's last message (a process's end): it goes out with the end-of-stream
    envelope and the body's end, in one write."""

    message: dict[str, Any]


class ConnectStream(StreamingResponse):
    """A server stream: its messages, then the end-of-stream envelope (with the error, if
    one ended the stream).

    Each write is a wake-up of the client's reader (the e2b SDK's is a Rust thread handing
    the bytes to Python's), which on a busy host is most of what a short command's stream
    costs: the headers wait for the first message and go out with it, and a :class:`Last`
    message goes with the stream's end.
    """

    def __init__(self, messages: AsyncGenerator[dict[str, Any] | Last]) -> None:
        self._final = False
        super().__init__(self._chunks(messages), media_type=STREAM_TYPE)

    async def _chunks(
        self, messages: AsyncGenerator[dict[str, Any] | Last]
    ) -> AsyncIterator[bytes]:
        async with contextlib.aclosing(messages):
            try:
                async for message in messages:
                    if isinstance(message, Last):
                        self._final = True
                        yield envelope(message.message) + end_of_stream(None)
                        return
                    yield envelope(message)
            except SietchError as exc:
                end = end_of_stream(exc)
            else:
                end = end_of_stream(None)
        self._final = True
        yield end

    async def stream_response(self, send: Send) -> None:
        started = False
        async for chunk in self.body_iterator:
            if not started:
                start = {"type": "http.response.start", "status": self.status_code}
                await send({**start, "headers": self.raw_headers})
                started = True
            await send({"type": "http.response.body", "body": chunk, "more_body": not self._final})


def client_stream_reply(message: dict[str, Any]) -> Response:
    """A client stream's answer: its one message, then the end of the stream."""
    return Response(envelope(message) + end_of_stream(None), media_type=STREAM_TYPE)


def stream_failure(exc: SietchError) -> Response:
    """A stream that fails before its first message: still a 200, its error at the end."""
    return Response(end_of_stream(exc), media_type=STREAM_TYPE)


def end_of_stream(exc: SietchError | None) -> bytes:
    end = {} if exc is None else {"error": error_json(code_of(exc), exc.message)}
    return envelope(end, END_STREAM)

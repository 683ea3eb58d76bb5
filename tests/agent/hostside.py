"""A minimal host end of the agent protocol, for tests only.

Deliberately independent of the production client (sietch/agent/connection.py):
these tests pin down what the guest puts on the wire, so they speak it with
nothing but :mod:`sietch.agent.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from sietch.agent import protocol as P
from sietch.agent.protocol import Kind

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Retry ``check`` until it stops failing an assertion, up to a deadline."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.02),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    ):
        with attempt:
            return await check()
    raise AssertionError("unreachable")


class AgentError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Outcome:
    """Everything one stream delivered."""

    final: dict[str, Any]
    stdout: bytes = b""
    stderr: bytes = b""
    msgs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.final.get("type") == "result"


class HostStream:
    def __init__(self, conn: HostConnection, sid: int, auto_window: bool) -> None:
        self.conn = conn
        self.id = sid
        self.auto_window = auto_window
        self.events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.credit = P.INITIAL_WINDOW
        self._credit_changed = asyncio.Event()
        self.received = 0
        self.closed = False

    # guest -> host
    async def next(self, timeout: float = 30) -> tuple[Any, ...]:
        """("msg", obj) | ("data", channel, bytes) | ("eof",) | ("close",)"""
        event = await asyncio.wait_for(self.events.get(), timeout)
        if event[0] == "data" and self.auto_window:
            self.grant(len(event[2]))
        return event

    def grant(self, n: int) -> None:
        self.conn.send(P.encode_window(self.id, n))

    async def outcome(self, timeout: float = 60) -> Outcome:
        out = Outcome(final={})
        stdout, stderr = bytearray(), bytearray()
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event[0] == "data":
                    (stdout if event[1] == P.CHANNEL_STDOUT else stderr).extend(event[2])
                elif event[0] == "msg":
                    if event[1].get("type") in ("result", "error"):
                        out.final = event[1]
                    else:
                        out.msgs.append(event[1])
                elif event[0] == "close":
                    break
        out.stdout, out.stderr = bytes(stdout), bytes(stderr)
        return out

    async def result(self, timeout: float = 60) -> dict[str, Any]:
        """The final result, raising AgentError for an error."""
        out = await self.outcome(timeout)
        if out.final.get("type") == "error":
            raise AgentError(out.final["code"], out.final["message"])
        return out.final

    # host -> guest
    async def write(self, data: bytes, channel: int = P.CHANNEL_IN) -> None:
        view = memoryview(data)
        while view:
            while self.credit <= 0:
                self._credit_changed.clear()
                await self._credit_changed.wait()
            n = min(len(view), P.CHUNK, self.credit)
            self.conn.send(P.encode_data(self.id, channel, view[:n]))
            self.credit -= n
            view = view[n:]
            await self.conn.drain()

    def eof(self) -> None:
        self.conn.send(P.encode(Kind.EOF, self.id))

    def msg(self, obj: dict[str, Any]) -> None:
        self.conn.send(P.encode_json(Kind.MSG, self.id, obj))

    def close(self) -> None:
        self.conn.send(P.encode(Kind.CLOSE, self.id))

    def _on_window(self, n: int) -> None:
        self.credit += n
        self._credit_changed.set()


class HostConnection:
    """One accepted connection from the agent, after the SYNC handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.streams: dict[int, HostStream] = {}
        self._next_id = 1
        self._task: asyncio.Task[None] | None = None
        self.parser = P.Parser()
        self.skipped_before_sync = 0
        self.nonce = b""
        self.stray: list[P.Frame] = []

    def send(self, frame: bytes) -> None:
        self.writer.write(frame)

    async def drain(self) -> None:
        await self.writer.drain()

    async def sync(
        self, junk: bytes = b"", timeout: float = 10, resend: float | None = None
    ) -> None:
        """Send (optional junk, then) SYNC; skip everything until its echo.

        ``resend`` repeats the same SYNC at that interval while no answer came
        (a booting guest cannot answer yet); the nonce stays the same, so an
        answer to any copy counts however slow the guest is.
        """
        nonce = self.nonce = os.urandom(8)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for stream in self.streams.values():
            stream.closed = True
        self.streams.clear()
        self.parser.resync(want_nonce=nonce)
        self.send(junk + P.encode_sync(nonce))
        await self.drain()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), resend)
                except TimeoutError:
                    self.send(P.encode_sync(nonce))
                    continue
                if not data:
                    raise ConnectionError("agent closed the connection during SYNC")
                frames = list(self.parser.feed(data))
                if frames:
                    break
        assert frames[0].kind is Kind.SYNC and frames[0].payload.endswith(nonce), frames[0]
        self.skipped_before_sync = self.parser.skipped
        self._task = asyncio.get_running_loop().create_task(self._read(frames[1:]))

    async def _read(self, first: list[P.Frame]) -> None:
        for frame in first:
            self._dispatch(frame)
        while True:
            data = await self.reader.read(1 << 20)
            if not data:
                for stream in self.streams.values():
                    stream.events.put_nowait(("close",))
                return
            for frame in self.parser.feed(data):
                self._dispatch(frame)

    def _dispatch(self, frame: P.Frame) -> None:
        stream = self.streams.get(frame.stream)
        if stream is None:
            self.stray.append(frame)
            return
        if frame.kind is Kind.MSG:
            stream.events.put_nowait(("msg", frame.json()))
        elif frame.kind is Kind.DATA:
            channel, data = frame.data()
            stream.received += len(data)
            stream.events.put_nowait(("data", channel, data))
        elif frame.kind is Kind.EOF:
            stream.events.put_nowait(("eof",))
        elif frame.kind is Kind.WINDOW:
            stream._on_window(frame.window())
        elif frame.kind is Kind.CLOSE:
            stream.closed = True
            del self.streams[frame.stream]
            stream.events.put_nowait(("close",))
        else:
            self.stray.append(frame)

    def open(self, op: str, *, auto_window: bool = True, **args: Any) -> HostStream:
        return self.open_raw(
            P.encode_json(Kind.OPEN, 0, {"op": op, **args})[P.HEADER.size :],
            auto_window=auto_window,
        )

    def open_raw(self, payload: bytes, *, auto_window: bool = True) -> HostStream:
        sid = self._next_id
        self._next_id += 1
        stream = HostStream(self, sid, auto_window)
        self.streams[sid] = stream
        self.send(P.encode(Kind.OPEN, sid, payload))
        return stream

    async def call(self, op: str, deadline: float = 60, **args: Any) -> dict[str, Any]:
        """Run op to its result (``deadline`` is ours; ``timeout`` goes to the agent)."""
        return await self.open(op, **args).result(deadline)

    async def run(self, deadline: float = 60, **args: Any) -> Outcome:
        """exec in the foreground; the Outcome carries output and the final message."""
        return await self.open("exec", **args).outcome(deadline)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

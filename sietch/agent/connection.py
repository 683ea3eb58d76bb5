"""Host end of the agent protocol: one multiplexed connection per sandbox.

The socket is QEMU's chardev for the guest's virtio-serial port. The
connection re-synchronises on every (re)connect (see
:mod:`sietch.agent.protocol`), so it survives the host side going away and a
VM being restored into a new QEMU process with a new socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sietch.agent import protocol as p
from sietch.errors import AgentUnavailable, SietchError, error_for_agent_code

log = logging.getLogger(__name__)

_SYNC_RETRY_S = (0.05, 0.1, 0.2, 0.4, 0.5)
_WINDOW_BATCH = p.INITIAL_WINDOW // 4


@dataclass(frozen=True, slots=True)
class Output:
    """A chunk of a stream's bytes: stdout (1), stderr (2) or a file body (1)."""

    channel: int
    data: bytes


Event = Output | dict[str, Any]


class AgentStream:
    """One operation in flight: an async iterator of :class:`Output` and message dicts.

    Iteration ends after the stream's final message; :meth:`result` returns
    that message or raises the error it carries.
    """

    def __init__(self, conn: AgentConnection, stream_id: int) -> None:
        self._conn = conn
        self.id = stream_id
        self._events: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        self._credit = p.INITIAL_WINDOW
        self._credit_changed = asyncio.Event()
        self._unacked = 0
        self.final: dict[str, Any] | None = None
        self.closed = False

    # -- called by the connection's reader ------------------------------------

    def _deliver(self, frame: p.Frame) -> None:
        if frame.kind is p.Kind.DATA:
            channel, data = frame.data()
            self._events.put_nowait(Output(channel, data))
        elif frame.kind is p.Kind.MSG:
            self._events.put_nowait(frame.json())
        elif frame.kind is p.Kind.WINDOW:
            self._credit += frame.window()
            self._credit_changed.set()
        elif frame.kind is p.Kind.CLOSE:
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self.closed:
            self.closed = True
            self._events.put_nowait(exc)
            self._credit_changed.set()

    # -- the operation's side ---------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            item = await self._events.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Output):
                await self._consumed(len(item.data) + 1)
            elif item.get("type") in ("result", "error"):
                self.final = item
            yield item

    async def result(self) -> dict[str, Any]:
        """Drain the stream and return its final result (raising its error)."""
        async for _ in self:
            pass
        return self.check()

    def check(self) -> dict[str, Any]:
        final = self.final
        if final is None:
            raise AgentUnavailable("the guest agent closed the stream without a result")
        if final.get("type") == "error":
            raise error_for_agent_code(
                final.get("code", "internal"), final.get("message", "agent error")
            )
        return final

    async def _consumed(self, n: int) -> None:
        self._unacked += n
        if self._unacked >= _WINDOW_BATCH and not self.closed:
            credit, self._unacked = self._unacked, 0
            await self._conn._send(p.encode_window(self.id, credit))

    async def send(self, data: bytes | memoryview, channel: int = p.CHANNEL_IN) -> None:
        """Send bytes, waiting for the guest's flow-control credit."""
        view = memoryview(data)
        while view:
            while self._credit <= 0 and not self.closed:
                self._credit_changed.clear()
                await self._credit_changed.wait()
            if self.closed:
                raise AgentUnavailable("stream closed while sending")
            n = min(len(view), p.CHUNK, self._credit)
            self._credit -= n
            await self._conn._send(p.encode_data(self.id, channel, view[:n]))
            view = view[n:]

    async def send_eof(self) -> None:
        await self._conn._send(p.encode(p.Kind.EOF, self.id))

    async def send_msg(self, msg: dict[str, Any]) -> None:
        await self._conn._send(p.encode_json(p.Kind.MSG, self.id, msg))

    async def close(self) -> None:
        """Abandon the stream (the agent drops what it was doing for it)."""
        if not self.closed:
            self._finish(None)
            self._conn._streams.pop(self.id, None)
            with contextlib.suppress(AgentUnavailable):
                await self._conn._send(p.encode(p.Kind.CLOSE, self.id))

    async def __aenter__(self) -> AgentStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AgentConnection:
    """The host's connection to one guest agent.

    ``connect()`` waits for the guest to answer (the boot); later operations
    reconnect by themselves when the socket broke.
    """

    def __init__(self, socket_path: Path, *, name: str = "agent") -> None:
        self.socket_path = socket_path
        self.log = logging.LoggerAdapter(log, {"sandbox": name})
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._streams: dict[int, AgentStream] = {}
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self.hello: dict[str, Any] = {}
        self.hello_params: dict[str, Any] = {}

    @property
    def connected(self) -> bool:
        return self._read_task is not None and not self._read_task.done()

    async def connect(self, timeout: float, **hello: Any) -> dict[str, Any]:
        """Connect, synchronise with the agent and say hello; returns its answer.

        ``hello`` parameters (clock, entropy, hostname) are remembered and
        sent again after every reconnect.
        """
        self.hello_params = hello
        async with self._connect_lock:
            await self._connect(timeout)
        return self.hello

    async def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        await self._drop("reconnecting")
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    self.socket_path, limit=4 * p.MAX_PAYLOAD
                )
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise AgentUnavailable(
                        f"agent socket {self.socket_path} did not accept a connection"
                    ) from exc
                await asyncio.sleep(0.02)
        parser = await self._sync(deadline)
        self._read_task = asyncio.create_task(self._read_loop(parser), name="agent-reader")
        stream = await self._open("hello", {**self.hello_params, "time": time.time()})
        remaining = max(deadline - time.monotonic(), 1.0)
        try:
            self.hello = await asyncio.wait_for(stream.result(), remaining)
        except TimeoutError as exc:
            raise AgentUnavailable("the guest agent did not answer hello") from exc
        self.log.debug("agent ready: %s", self.hello)

    async def _sync(self, deadline: float) -> p.Parser:
        assert self._reader is not None and self._writer is not None
        # One nonce for all retries: the agent answers a repeated SYNC without
        # resetting, so a late answer can't drop streams opened after the first.
        nonce = os.urandom(8)
        parser = p.Parser(want_nonce=nonce)
        for attempt in itertools.count():
            self._writer.write(p.encode_sync(nonce))
            await self._writer.drain()
            wait = _SYNC_RETRY_S[min(attempt, len(_SYNC_RETRY_S) - 1)]
            until = min(time.monotonic() + wait, deadline)
            while (left := until - time.monotonic()) > 0:
                try:
                    chunk = await asyncio.wait_for(self._reader.read(65536), left)
                except TimeoutError:
                    break
                if not chunk:
                    raise AgentUnavailable("agent socket closed during synchronisation")
                for frame in parser.feed(chunk):
                    if frame.kind is p.Kind.SYNC:
                        return parser
            if time.monotonic() >= deadline:
                raise AgentUnavailable(
                    "the guest agent did not answer within the boot timeout; "
                    "see the sandbox's console log (raise SIETCH_BOOT_TIMEOUT_S on a slow machine)"
                )
        raise AssertionError("unreachable")

    async def _read_loop(self, parser: p.Parser) -> None:
        assert self._reader is not None
        reader = self._reader
        error: BaseException = AgentUnavailable("the agent connection closed")
        try:
            while chunk := await reader.read(256 * 1024):
                for frame in parser.feed(chunk):
                    stream = self._streams.get(frame.stream)
                    if stream is None:
                        continue
                    stream._deliver(frame)
                    if frame.kind is p.Kind.CLOSE:
                        self._streams.pop(frame.stream, None)
        except (OSError, ValueError, p.ProtocolError) as exc:
            error = AgentUnavailable(f"the agent connection failed: {exc}")
        finally:
            for stream in self._streams.values():
                stream._finish(error)
            self._streams.clear()

    async def _send(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or not self.connected:
            raise AgentUnavailable("not connected to the guest agent")
        async with self._write_lock:
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError) as exc:
                raise AgentUnavailable(f"writing to the agent failed: {exc}") from exc

    async def _open(self, op: str, params: dict[str, Any]) -> AgentStream:
        stream = AgentStream(self, next(self._ids))
        self._streams[stream.id] = stream
        await self._send(p.encode_json(p.Kind.OPEN, stream.id, {"op": op, **params}))
        return stream

    async def open(self, op: str, reconnect_timeout: float = 10.0, **params: Any) -> AgentStream:
        """Start an operation; reconnects first if the connection broke."""
        if not self.connected:
            async with self._connect_lock:
                if not self.connected:
                    await self._connect(reconnect_timeout)
        return await self._open(op, params)

    async def call(self, op: str, **params: Any) -> dict[str, Any]:
        """Run an operation that sends nothing but its parameters; return its result."""
        async with await self.open(op, **params) as stream:
            return await stream.result()

    async def _drop(self, reason: str) -> None:
        task, self._read_task = self._read_task, None
        writer, self._writer = self._writer, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SietchError):
                await task
        for stream in self._streams.values():
            stream._finish(AgentUnavailable(f"agent connection dropped: {reason}"))
        self._streams.clear()
        if writer is not None:
            # Nothing still buffered matters once we drop the connection, and a guest
            # that never reads (one that failed to boot) would make a graceful close
            # wait for it forever.
            writer.transport.abort()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        await self._drop("closed")

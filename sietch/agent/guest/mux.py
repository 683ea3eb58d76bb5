"""Streams over one byte stream: framing, dispatch, and the one writer.

Why it is shaped like this:

* The reader never waits for any single stream. Inbound frames are appended
  to their stream's inbox (bounded by the credit this side granted) and the
  reader moves on, so a stream whose consumer is slow stalls only itself.
* Outbound DATA waits in its own stream's queue until that stream has credit
  (see :mod:`stream`). A round-robin scheduler moves at most one chunk per
  turn from the streams that can send into the shared writer queue, and only
  while that queue is below a high-water mark: a stream without credit holds
  up nobody, busy streams share the port fairly, and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, Coroutine
from itertools import islice
from typing import Any

from sietch.agent import protocol as P
from sietch.agent.guest.stream import Stream
from sietch.agent.protocol import Kind

log = logging.getLogger(__name__)

WRITE_HIGH = 4 * P.CHUNK
"""Bytes in the shared writer queue above which no more DATA is moved into it."""
READ_SIZE = 256 * 1024
TORN_FRAME_AFTER = 2.0
"""Seconds a frame may stay incomplete before it is presumed torn: left half sent
by a host that went away without the port noticing (a quick reconnect, a VM
restored into a new QEMU), it would swallow the next connection's SYNC, and
the SYNCs the host re-sends after it. A live host's frames complete in
milliseconds."""
TORN_SYNC_AFTER = 0.25
"""The same, once the bytes being swallowed contain SYNC's magic."""


Dispatch = Callable[[Stream, dict[str, Any]], Coroutine[Any, Any, None]]


class Mux:
    """Serves streams over whichever byte stream the transport attaches."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._loop = asyncio.get_running_loop()
        self._dispatch = dispatch
        self._fd = -1
        self._on_eof: Callable[[], None] | None = None
        self._parser = P.Parser()
        self._streams: dict[int, Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wq: deque[bytes | memoryview] = deque()
        self._wq_bytes = 0
        self._ready: deque[Stream] = deque()
        self._ready_set: set[Stream] = set()
        self._flush_pending = False
        self._writer_on = False
        self._idle: list[asyncio.Future[None]] = []
        self._fed = 0
        self._framed = 0
        self._partial_since = 0.0
        self._suspect = False
        self._torn_timer: asyncio.TimerHandle | None = None
        self.syncs = 0
        self._nonce = b""
        self._sync_waiters: list[asyncio.Future[None]] = []

    @property
    def attached(self) -> bool:
        return self._fd >= 0

    def attach(self, fd: int, on_eof: Callable[[], None]) -> None:
        """Start serving a (new) host connection on ``fd``; ``on_eof`` fires when it ends."""
        self.detach()
        self._fd = fd
        self._on_eof = on_eof
        # Whatever is buffered belongs to an older connection; the new one
        # starts with SYNC.
        self._parser.resync()
        self._loop.add_reader(fd, self._on_readable)
        self._suspect = False
        log.debug("attached to fd %d", fd)

    def detach(self) -> None:
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        if self._torn_timer is not None:
            self._torn_timer.cancel()
            self._torn_timer = None
        if self._writer_on:
            self._loop.remove_writer(self._fd)
            self._writer_on = False
        self._fd = -1
        self._on_eof = None
        self._nonce = b""  # a new byte stream: even a repeated nonce is a new connection
        self.reset()

    def reset(self) -> None:
        """Forget the connection's streams and queued frames; processes live on."""
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._abort()
        self._wq.clear()
        self._wq_bytes = 0
        self._ready.clear()
        self._ready_set.clear()
        self._wake_idle()

    # -- reading ---------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(16):  # then let other callbacks run
            try:
                data = os.read(self._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.warning("port read failed: %s", exc)
                data = b""
            if not data:
                self._eof()
                return
            was_between_frames = self._buffered() == 0
            framed = self._framed
            self._fed += len(data)
            self._feed(data)
            if self._fd < 0:
                return
            if was_between_frames or self._framed != framed:
                self._partial_since = self._loop.time()  # what is left began just now
                self._suspect = False
            # Only the bytes of the incomplete frame count (a SYNC that was
            # parsed as one is no evidence).
            held = self._buffered()
            if held and data.find(P.MAGIC, max(0, len(data) - held)) >= 0:
                self._suspect = True
        self._watch_torn_frame()

    def _feed(self, data: bytes) -> None:
        for frame in self._parser.feed(data):
            self._framed += P.HEADER.size + len(frame.payload)
            try:
                self._handle(frame)
            except Exception:
                log.exception("frame %s on stream %d", frame.kind.name, frame.stream)

    def _eof(self) -> None:
        on_eof = self._on_eof
        log.info("host connection ended")
        self.detach()
        if on_eof is not None:
            on_eof()

    def _buffered(self) -> int:
        """Bytes the parser holds: the start of a frame not yet complete."""
        return self._fed - self._framed - self._parser.skipped

    def _half_frame(self) -> bool:
        return self._fd >= 0 and not self._parser.scanning and self._buffered() > 0

    def _torn_deadline(self) -> float:
        return self._partial_since + (TORN_SYNC_AFTER if self._suspect else TORN_FRAME_AFTER)

    def _watch_torn_frame(self) -> None:
        if not self._half_frame():
            return
        deadline = self._torn_deadline()
        if self._torn_timer is not None:
            if self._torn_timer.when() <= deadline:
                return  # it fires no later than needed and re-checks then
            self._torn_timer.cancel()
        self._torn_timer = self._loop.call_at(deadline, self._torn_check)

    def _torn_check(self) -> None:
        self._torn_timer = None
        if not self._half_frame():
            return
        if self._loop.time() < self._torn_deadline():
            self._watch_torn_frame()
            return
        log.warning(
            "a frame stayed incomplete for %.2fs%s: presumed torn, rescanning for SYNC",
            self._loop.time() - self._partial_since,
            " while SYNC bytes arrived" if self._suspect else "",
        )
        self._parser.resync()
        self._suspect = False
        self._feed(b"")
        self._partial_since = self._loop.time()

    def _handle(self, frame: P.Frame) -> None:
        kind = frame.kind
        if kind is Kind.SYNC:
            self._sync(frame)
            return
        if kind is Kind.OPEN:
            self._open(frame)
            return
        stream = self._streams.get(frame.stream)
        if stream is None:
            return  # late frame for a stream this side already finished
        if kind is Kind.DATA:
            if frame.payload:
                channel, data = frame.data()
                stream._deliver(("data", channel, data))
        elif kind is Kind.MSG:
            try:
                obj = frame.json()
            except (ValueError, P.ProtocolError) as exc:
                stream.fail("invalid_argument", f"stream {stream.id}: malformed MSG: {exc}")
                return
            stream._deliver(("msg", obj))
        elif kind is Kind.EOF:
            stream._deliver(("eof",))
        elif kind is Kind.WINDOW:
            stream._add_credit(frame.window())
        elif kind is Kind.CLOSE:
            # The host dropped its state; nothing may be sent on this id any more.
            del self._streams[stream.id]
            stream._abort()

    def _sync(self, frame: P.Frame) -> None:
        if len(frame.payload) != P.SYNC_LEN or not frame.payload.startswith(P.MAGIC):
            log.warning("malformed SYNC ignored")
            return
        nonce = frame.payload[len(P.MAGIC) :]
        if nonce == self._nonce:
            # The host re-sent its SYNC because the answer was slow (a booting
            # guest). Same nonce, same connection: answer again, but do not
            # drop streams it may have opened since the first answer.
            self.enqueue(P.encode(Kind.SYNC, frame.stream, frame.payload))
            log.debug("SYNC %s repeated", nonce.hex())
            return
        self.reset()
        self._nonce = nonce
        self.enqueue(P.encode(Kind.SYNC, frame.stream, frame.payload))
        self.syncs += 1
        self._wake(self._sync_waiters)
        log.info("SYNC %s: new host connection", nonce.hex())

    async def synced(self) -> None:
        """Wait for the first SYNC of any connection."""
        if self.syncs == 0:
            fut = self._loop.create_future()
            self._sync_waiters.append(fut)
            await fut

    def _open(self, frame: P.Frame) -> None:
        sid = frame.stream
        if sid in self._streams:
            log.warning("OPEN for stream %d, which is still open: ignored", sid)
            return
        stream = Stream(self, sid)
        self._streams[sid] = stream
        try:
            request = frame.json()
        except (ValueError, P.ProtocolError) as exc:
            stream.fail("invalid_argument", f"stream {sid}: malformed OPEN payload: {exc}")
            return
        task = self._loop.create_task(self._dispatch(stream, request))
        stream.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writing ---------------------------------------------------------

    def enqueue(self, frame: bytes | memoryview) -> None:
        """Queue a frame that must go out regardless of stream credit."""
        self._wq.append(frame)
        self._wq_bytes += len(frame)
        self._kick()

    def schedule(self, stream: Stream) -> None:
        if stream not in self._ready_set and stream.ready and not stream.closed:
            self._ready.append(stream)
            self._ready_set.add(stream)
            self._kick()

    def forget(self, stream: Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]
        stream._abort()

    def _kick(self) -> None:
        # Coalesce: one flush per loop iteration, not one write per frame.
        if self._fd >= 0 and not self._writer_on and not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _fill(self) -> None:
        while self._ready and self._wq_bytes < WRITE_HIGH:
            stream = self._ready.popleft()
            self._ready_set.discard(stream)
            if not stream.closed and stream.ready and stream._produce():
                self._ready.append(stream)
                self._ready_set.add(stream)

    def _flush(self) -> None:
        self._flush_pending = False
        while self._fd >= 0:
            self._fill()
            if not self._wq:
                break
            try:
                written = os.writev(self._fd, list(islice(self._wq, 64)))
            except InterruptedError:
                continue
            except BlockingIOError:
                if not self._writer_on:
                    self._loop.add_writer(self._fd, self._flush)
                    self._writer_on = True
                return
            except OSError as exc:
                log.warning("port write failed: %s", exc)
                self._eof()
                return
            self._wq_bytes -= written
            while written:
                head = self._wq[0]
                if written >= len(head):
                    written -= len(head)
                    self._wq.popleft()
                else:
                    self._wq[0] = memoryview(head)[written:]
                    written = 0
        if self._writer_on and self._fd >= 0:
            self._loop.remove_writer(self._fd)
            self._writer_on = False
        if not self._wq and not self._ready:
            self._wake_idle()

    async def flushed(self) -> None:
        """Wait until everything queued so far has been written (or dropped)."""
        if not self._wq and not self._ready:
            return
        fut = self._loop.create_future()
        self._idle.append(fut)
        await fut

    def _wake_idle(self) -> None:
        self._wake(self._idle)

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        ready, waiters[:] = list(waiters), []
        for fut in ready:
            if not fut.done():
                fut.set_result(None)

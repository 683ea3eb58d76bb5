"""A command the agent started: its output, input, signals and exit.

A process outlives the stream that started it: if the host goes away, its
output keeps flowing into per-channel rings (the last 1 MiB each) and a later
``attach`` can replay and follow it. While streams are attached, output is
read from the pipes only as fast as the slowest attached stream drains, so a
command printing gigabytes blocks on its pipe instead of filling our memory.

Exit statuses come from the one reaper (see :mod:`reaper`); nothing here calls
waitpid. A process is *done* once it has exited and its output is drained.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import struct
import termios
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sietch.agent import protocol as P
from sietch.agent.guest.errors import OpError
from sietch.agent.guest.reaper import decode_status
from sietch.agent.guest.stream import Stream

if TYPE_CHECKING:
    from sietch.agent.guest.table import ProcessTable

log = logging.getLogger(__name__)

RING_LIMIT = 1 << 20
"""Bytes of each output channel kept for replay."""
PAUSE_AT = 4 * P.CHUNK
"""Bytes queued on an attached stream at which the pipes stop being read."""
RESUME_AT = P.CHUNK
MAX_EXITED = 256
"""Exited processes kept listed before the oldest are forgotten."""
PTY_SETTLE = 0.2
"""After exit, seconds of pty silence before its output counts as complete: a
background job may keep the terminal open, so EIO may never come, and tty
output can still be in flight right after the exit status arrives."""


@dataclass
class Spec:
    """A validated exec request."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    cmd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    timeout: float | None = None
    stdin: bool = False
    pty: bool = False
    cols: int = 80
    rows: int = 24
    background: bool = False
    tag: str | None = None
    listed: bool = True


class Ring:
    """The tail of one output channel."""

    __slots__ = ("chunks", "dropped", "size")

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.dropped = 0

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        while self.size > RING_LIMIT:
            excess = self.size - RING_LIMIT
            head = self.chunks[0]
            if len(head) <= excess:
                self.chunks.popleft()
                cut = len(head)
            else:
                self.chunks[0] = head[excess:]
                cut = excess
            self.size -= cut
            self.dropped += cut

    def text(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Process:
    def __init__(
        self,
        *,
        table: ProcessTable,
        spec: Spec,
        pid: int,
        popen: Any,
        out: dict[int, int],
        stdin_fd: int | None,
        master: int | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.pid = pid
        self.spec = spec
        self.started_at = time.time()
        self.running = True
        self.done = False
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.timed_out = False
        self.background = spec.background
        self.rings = {P.CHANNEL_STDOUT: Ring(), P.CHANNEL_STDERR: Ring()}
        self._table = table
        self._popen = popen
        self._out = out
        self._stdin = stdin_fd
        self._master = master
        self._stdin_lock = asyncio.Lock()
        self._stdin_wait: asyncio.Future[None] | None = None
        self._streams: list[Stream] = []
        self._paused = False
        self._drain_armed = False
        self._settle: asyncio.TimerHandle | None = None
        self._exit_waiters: list[asyncio.Future[None]] = []
        self._done_waiters: list[asyncio.Future[None]] = []
        self._timer = (
            self._loop.call_later(spec.timeout, self._expire) if spec.timeout is not None else None
        )
        for fd in out:
            self._loop.add_reader(fd, self._pump, fd)

    # -- output ----------------------------------------------------------

    def _pump(self, fd: int) -> None:
        channel = self._out.get(fd)
        if channel is None:
            return
        while not self._paused:
            try:
                data = os.read(fd, P.CHUNK)
            except BlockingIOError:
                if not self.running:
                    self._drained(fd)
                return
            except InterruptedError:
                continue
            except OSError:
                data = b""  # EIO from a pty master: no slave end is open any more
            if not data:
                self._close_out(fd)
                return
            self._emit(channel, data)
            if self.running:
                return  # one read per wakeup keeps the loop fair to other work

    def _drained(self, fd: int) -> None:
        """Nothing left to read right now, after exit."""
        if fd != self._master:
            # Pipe writes complete before exit, so an empty pipe after exit is
            # all there was (an orphan holding it open is not waited for).
            self._close_out(fd)
            return
        if self._settle is not None:
            self._settle.cancel()
        self._settle = self._loop.call_later(PTY_SETTLE, self._close_out, fd)

    def _emit(self, channel: int, data: bytes) -> None:
        self.rings[channel].append(data)
        for stream in self._streams:
            stream.write(channel, data)
        if any(s.buffered > PAUSE_AT for s in self._streams):
            self._pause()

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._out:
                self._loop.remove_reader(fd)
        self._arm_drain()

    def _arm_drain(self) -> None:
        if self._drain_armed:
            return
        for stream in self._streams:
            if stream.buffered > RESUME_AT:
                self._drain_armed = True
                stream.on_drain(RESUME_AT, self._on_drain)
                return

    def _on_drain(self) -> None:
        self._drain_armed = False
        self._maybe_resume()

    def _maybe_resume(self) -> None:
        if not self._paused:
            return
        if any(s.buffered > RESUME_AT for s in self._streams):
            self._arm_drain()
            return
        self._paused = False
        for fd in self._out:
            self._loop.add_reader(fd, self._pump, fd)
        if not self.running:
            for fd in list(self._out):
                self._pump(fd)

    def _close_out(self, fd: int) -> None:
        if self._out.pop(fd, None) is None:
            return
        self._loop.remove_reader(fd)
        if fd == self._master:
            if self._settle is not None:
                self._settle.cancel()
                self._settle = None
            self._drop_stdin()
        os.close(fd)
        if not self._out and not self.running:
            self._finish()

    # -- lifecycle -------------------------------------------------------

    def on_exit(self, status: int) -> None:
        """Called by the reaper with the wait status."""
        self.exit_code, self.signal = decode_status(status)
        self.running = False
        if self._popen is not None:
            # Keeps subprocess from ever polling (and warning about) this pid.
            self._popen.returncode = self.exit_code if self.signal is None else -self.signal
        if self._timer is not None:
            self._timer.cancel()
        if self._stdin is not None and self._stdin != self._master:
            self._drop_stdin()
        _resolve(self._exit_waiters)
        if not self._out:
            self._finish()
        elif not self._paused:
            for fd in list(self._out):
                self._pump(fd)

    def _finish(self) -> None:
        self.done = True
        self._drop_stdin()
        _resolve(self._done_waiters)
        self._table._on_done(self)

    def _expire(self) -> None:
        self._timer = None
        if self.running:
            log.info(
                "pid %d: timeout after %ss, killing its process group", self.pid, self.spec.timeout
            )
            self.timed_out = True
            self._killpg(signal.SIGKILL)

    def _killpg(self, sig: int) -> bool:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return False
        return True

    def when_exited(self) -> asyncio.Future[None]:
        """A fresh future per waiter, so cancelling one wait cancels nothing shared."""
        return _waiter(self._loop, self._exit_waiters, not self.running)

    def when_done(self) -> asyncio.Future[None]:
        return _waiter(self._loop, self._done_waiters, self.done)

    # -- control ---------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        if not self.running or not self._killpg(sig):
            raise OpError("no_such_process", f"process {self.pid} has exited")

    def resize(self, cols: int, rows: int) -> None:
        if self._master is None or self._master not in self._out:
            raise OpError("invalid_argument", f"process {self.pid} has no terminal to resize")
        set_winsize(self._master, cols, rows)

    async def write_stdin(self, data: bytes) -> None:
        async with self._stdin_lock:
            await self._write_stdin(memoryview(data))

    async def close_stdin(self) -> None:
        async with self._stdin_lock:
            if self._stdin is not None and self._stdin == self._master:
                # A terminal has no half-close: EOF is ^D (at the start of a line).
                await self._write_stdin(memoryview(b"\x04"))
            else:
                self._drop_stdin()

    async def _write_stdin(self, view: memoryview) -> None:
        while view:
            fd = self._stdin
            if fd is None:
                return  # the command is gone or closed its input: drop the rest
            try:
                view = view[os.write(fd, view) :]
            except InterruptedError:
                continue
            except BlockingIOError:
                fut = self._loop.create_future()
                self._stdin_wait = fut
                self._loop.add_writer(fd, _set_once, fut)
                try:
                    await fut
                finally:
                    if self._stdin == fd:
                        self._loop.remove_writer(fd)
                    self._stdin_wait = None
            except OSError:
                self._drop_stdin()  # EPIPE: nobody reads it any more

    def _drop_stdin(self) -> None:
        fd, self._stdin = self._stdin, None
        if fd is None:
            return
        if self._stdin_wait is not None:
            self._loop.remove_writer(fd)
            _set_once(self._stdin_wait)
        if fd != self._master:
            os.close(fd)

    # -- attached streams ------------------------------------------------

    def attach(self, stream: Stream, *, replay: bool, follow: bool) -> None:
        if replay:
            for channel, ring in self.rings.items():
                for chunk in ring.chunks:
                    stream.write(channel, chunk)
        if follow and not self.done:
            self._streams.append(stream)
            stream.on_close(lambda: self.detach(stream))
            if stream.buffered > PAUSE_AT:
                self._pause()

    def detach(self, stream: Stream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
            self._maybe_resume()

    def result(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "signal": self.signal, "timed_out": self.timed_out}

    def info(self) -> dict[str, Any]:
        spec = self.spec
        entry: dict[str, Any] = {"pid": self.pid}
        if spec.cmd is not None:
            entry["cmd"] = spec.cmd
        else:
            entry["argv"] = spec.argv
        entry.update(
            tag=spec.tag,
            pty=spec.pty,
            running=self.running,
            exit_code=self.exit_code,
            signal=self.signal,
            timed_out=self.timed_out,
            started_at=self.started_at,
            background=self.background,
        )
        return entry


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        _set_once(fut)
    waiters.clear()


def _waiter(
    loop: asyncio.AbstractEventLoop, waiters: list[asyncio.Future[None]], already: bool
) -> asyncio.Future[None]:
    fut = loop.create_future()
    if already:
        fut.set_result(None)
    else:
        waiters.append(fut)
    return fut

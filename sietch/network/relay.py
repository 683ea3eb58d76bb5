"""TCP relays from the host into a sandbox's namespace.

An exposed guest port is forwarded by QEMU (``hostfwd``) to a port on the
namespace's loopback, where only Sietch can reach it; a relay listening on
the host's 127.0.0.1 carries each connection the rest of the way. A
:class:`UnixRelay` does the same from a unix socket instead, for Sietch's own
proxies (the desktop viewer, the IDE): no TCP port is opened on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sietch.network import netns

HOST = "127.0.0.1"
CHUNK = 256 * 1024


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Hold = Callable[[], contextlib.AbstractContextManager[object]]
"""Entered for as long as one relayed connection is open (an activity lease)."""


def _no_listener(host_port: int) -> socket.socket | None:
    del host_port
    return None


@dataclass(frozen=True)
class RelayHooks:
    """What a sandbox's relays do besides relaying: hold a lease per open connection, and
    start on a listening socket kept for their host port (see :mod:`sietch.network.parking`)."""

    hold: Hold = contextlib.nullcontext
    listener: Callable[[int], socket.socket | None] = _no_listener


async def connect(namespace: int | None, port: int) -> Streams:
    """A connection to ``127.0.0.1:port`` inside ``namespace`` (None: the host's own)."""
    if namespace is None:
        return await asyncio.open_connection(HOST, port, limit=CHUNK)
    sock = netns.socket_in(namespace)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        return await asyncio.open_connection(sock=sock, limit=CHUNK)
    except BaseException:
        sock.close()
        raise


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close, so the far side sees the end of the request."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():  # uvloop raises on a closed one
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def splice(a: Streams, b: Streams) -> None:
    try:
        await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))
    finally:
        # Both closed before any wait: a cancel (or the task's end) during the first
        # wait must not leave the second open.
        for _, writer in (a, b):
            writer.close()
        for _, writer in (a, b):
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


@contextlib.contextmanager
def held(tasks: set[asyncio.Task[Any]]) -> Iterator[None]:
    """Keep the running connection handler in ``tasks`` (the loop holds tasks only weakly)
    until it ends, so its owner can cancel it on close. That cancellation ends the handler
    normally: asyncio's start_server callback (3.11) logs a cancelled handler as an error."""
    task = asyncio.current_task()
    if task is not None:
        tasks.add(task)
    try:
        yield
    except asyncio.CancelledError:
        pass
    finally:
        if task is not None:
            tasks.discard(task)


class Relay:
    """A host listener relaying each connection to ``port`` inside ``namespace``.

    It holds its connection tasks itself (the event loop keeps only weak
    references to tasks), and :meth:`close` ends them all.
    """

    def __init__(self, namespace: int, port: int, hold: Hold = contextlib.nullcontext) -> None:
        self.namespace = namespace
        self.port = port
        self.hold = hold
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host_port: int = 0, sock: socket.socket | None = None) -> int:
        """Listen on ``host_port`` of the host's loopback (0: any free one), or on ``sock``
        (listening already); returns the port."""
        if sock is not None:
            self.server = await asyncio.start_server(self._handle, sock=sock, limit=CHUNK)
        else:
            self.server = await asyncio.start_server(self._handle, HOST, host_port, limit=CHUNK)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inner = functools.partial(connect, self.namespace, self.port)
        with self.hold():
            await bridge((reader, writer), inner, self._connections)

    async def close(self) -> None:
        await _close(self.server, self._connections)


async def bridge(
    outer: Streams, inner: Callable[[], Awaitable[Streams]], tasks: set[asyncio.Task[Any]]
) -> None:
    """Splice an accepted connection to a new ``inner()`` one; abort it if that fails."""
    writer = outer[1]
    with held(tasks):
        target = None
        try:
            with contextlib.suppress(OSError):
                target = await inner()
        finally:
            if target is None:
                writer.transport.abort()
                writer.close()
        if target is not None:
            await splice(outer, target)


async def _close(server: asyncio.Server | None, tasks: set[asyncio.Task[Any]]) -> None:
    if server is not None:
        server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class UnixRelay:
    """A unix socket (mode 0600: root's server only) relaying each connection to what
    ``inner()`` opens then, so the target may move (a forward made again) between two."""

    def __init__(self, path: Path, inner: Callable[[], Awaitable[Streams]]) -> None:
        self.path = path
        self._inner = inner
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.server = await asyncio.start_unix_server(self._handle, self.path, limit=CHUNK)
        self.path.chmod(0o600)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await bridge((reader, writer), self._inner, self._connections)

    async def close(self) -> None:
        await _close(self.server, self._connections)
        self.path.unlink(missing_ok=True)

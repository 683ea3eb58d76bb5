"""TCP relays from the host into a sandbox's namespace.

An exposed guest port is forwarded by QEMU (``hostfwd``) to a port on the
namespace's loopback, where only Sietch can reach it; a relay listening on
the host's 127.0.0.1 carries each connection the rest of the way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from sietch.network import netns

HOST = "127.0.0.1"
CHUNK = 256 * 1024


async def connect(namespace: int, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``127.0.0.1:port`` inside ``namespace``."""
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
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    try:
        await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))
    finally:
        for _, writer in (a, b):
            writer.close()
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

    def __init__(self, namespace: int, port: int) -> None:
        self.namespace = namespace
        self.port = port
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self, host_port: int = 0) -> int:
        """Listen on ``host_port`` of the host's loopback (0: any free one); returns it."""
        self.server = await asyncio.start_server(self._handle, HOST, host_port, limit=CHUNK)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with held(self._connections):
            inner = None
            try:
                with contextlib.suppress(OSError):
                    inner = await connect(self.namespace, self.port)
            finally:
                if inner is None:
                    writer.transport.abort()
                    writer.close()
            if inner is not None:
                await splice((reader, writer), inner)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

"""TCP relays from the host into a sandbox's namespace.

An exposed guest port is forwarded by QEMU (``hostfwd``) to a port on the
namespace's loopback, where only Sietch can reach it; a relay listening on
the host's 127.0.0.1 carries each connection the rest of the way.
"""

from __future__ import annotations

import asyncio
import contextlib

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


async def listen(namespace: int, port: int, host_port: int = 0) -> asyncio.Server:
    """Relay ``host_port`` on the host (0: any free one) to ``port`` in the namespace."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            inner = await connect(namespace, port)
        except OSError:
            writer.transport.abort()
            writer.close()
            return
        await splice((reader, writer), inner)

    return await asyncio.start_server(handle, HOST, host_port, limit=CHUNK)

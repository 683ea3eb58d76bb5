"""Parked host ports on loopback, without VMs: a knock wakes, the listener is handed over."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sietch.network.parking import Parking
from sietch.network.relay import HOST


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"ping")
    writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


async def test_a_knock_wakes_and_the_woken_server_answers_on_the_same_socket() -> None:
    """The first connection calls wake, which takes the listening socket over for its own
    server; that connection and later ones are answered by it, on the same port."""
    port = free_port()
    servers: list[asyncio.Server] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"pong:" + await reader.read())
        await writer.drain()
        writer.close()

    async def wake(sandbox_id: str) -> None:
        if not servers:  # the woken sandbox's relay, on the parked socket
            sock = parking.take(sandbox_id, port)
            assert sock is not None
            servers.append(await asyncio.start_server(answer, sock=sock))

    parking = Parking(wake)
    await parking.park("sb-1", [port])
    try:
        assert parking.ports("sb-1") == [port]
        assert await ask(port) == b"pong:ping"
        assert parking.ports("sb-1") == []
        assert await ask(port) == b"pong:ping"
    finally:
        await parking.close()
        for server in servers:
            server.close()


async def test_a_failed_wake_closes_the_connection_and_keeps_the_port() -> None:
    """When the sandbox can't be woken the connection ends without data, the port stays
    parked, and release frees it."""
    port = free_port()

    async def wake(sandbox_id: str) -> None:
        raise RuntimeError(f"{sandbox_id} stays asleep")

    parking = Parking(wake)
    await parking.park("sb-1", [port])
    try:
        assert await ask(port) == b""
        assert parking.ports("sb-1") == [port]
        parking.release("sb-1")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)
    finally:
        await parking.close()

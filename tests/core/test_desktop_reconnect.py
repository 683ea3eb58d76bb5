"""A screenshot whose VNC connection gives no frame asks a new connection, and a pointer move
on it is sent again on a new one (unit test).

The stuck connection was seen in the suite and not reproduced at will, so the logic is
checked against a small RFB server on loopback whose first connection falls silent after
its first frame; the real VNC client and :class:`~sietch.core.desktop.Desktops` talk to it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import cast

import pytest
import pytest_asyncio

from sietch.core.computer import parse_action
from sietch.core.desktop import Desktops
from sietch.core.live import LiveSandbox

WIDTH, HEIGHT = 4, 2
COLOURS = [(200, 0, 0), (0, 0, 200)]
"""The screen each connection shows, in the order they are made."""


class SilentAfterOne:
    """RFB 3.8 with VNC authentication (any answer passes) and raw updates of a plain
    screen: the first connection answers one update request and then none."""

    def __init__(self) -> None:
        self.connections = 0
        self.pointer: list[tuple[int, int, int, int]] = []
        """(connection, x, y, buttons) of each pointer event received."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nth = self.connections
        self.connections += 1
        answers = 1 if nth == 0 else None
        blue, green, red = COLOURS[nth][2], COLOURS[nth][1], COLOURS[nth][0]
        pixels = bytes([blue, green, red, 0]) * (WIDTH * HEIGHT)
        try:
            writer.write(b"RFB 003.008\n")
            await reader.readexactly(12)
            writer.write(b"\x01\x02")  # one security type: VNC authentication
            await reader.readexactly(1)
            writer.write(bytes(16))  # the challenge
            await reader.readexactly(16)
            writer.write(struct.pack(">I", 0))  # passed
            await reader.readexactly(1)  # shared
            writer.write(struct.pack(">HH", WIDTH, HEIGHT) + bytes(16) + b"\0\0\0\4fake")
            while True:
                kind = (await reader.readexactly(1))[0]
                if kind == 0:  # SetPixelFormat
                    await reader.readexactly(19)
                elif kind == 2:  # SetEncodings
                    (count,) = struct.unpack(">xH", await reader.readexactly(3))
                    await reader.readexactly(4 * count)
                elif kind == 5:  # PointerEvent
                    mask, x, y = struct.unpack(">BHH", await reader.readexactly(5))
                    self.pointer.append((nth, x, y, mask))
                elif kind == 3:  # FramebufferUpdateRequest: the non-incremental one is answered
                    incremental = (await reader.readexactly(9))[0]
                    if incremental or answers == 0:
                        continue
                    if answers is not None:
                        answers -= 1
                    rect = struct.pack(">HHHHi", 0, 0, WIDTH, HEIGHT, 0)
                    writer.write(b"\x00\x00\x00\x01" + rect + pixels)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest_asyncio.fixture
async def desktop() -> AsyncIterator[tuple[SilentAfterOne, LiveSandbox]]:
    server = SilentAfterOne()
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]

    async def connect(guest_port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    sandbox = SimpleNamespace(
        id="sb-test",
        info=SimpleNamespace(
            desktop=SimpleNamespace(vnc_password="password", width=WIDTH, height=HEIGHT)
        ),
        connect=connect,
        on_stop=[],
        log=logging.getLogger("test"),
    )
    async with listening:
        yield server, cast(LiveSandbox, sandbox)


@pytest.mark.timeout(60)
async def test_a_stuck_connection_is_replaced(desktop: tuple[SilentAfterOne, LiveSandbox]) -> None:
    server, sandbox = desktop
    desktops = Desktops(stuck_s=0.5)
    try:
        first = await desktops.screenshot(sandbox)
        assert first.getpixel((0, 0)) == COLOURS[0]
        # The first connection gives no more frames: the screenshot comes from a second one.
        second = await desktops.screenshot(sandbox)
        assert (server.connections, second.getpixel((WIDTH - 1, HEIGHT - 1))) == (2, COLOURS[1])
        # which is kept for what follows.
        third = await desktops.screenshot(sandbox)
        assert (server.connections, third.getpixel((0, 0))) == (2, COLOURS[1])
    finally:
        await desktops.close()


@pytest.mark.timeout(60)
async def test_a_move_on_a_stuck_connection_is_sent_again_on_a_new_one(
    desktop: tuple[SilentAfterOne, LiveSandbox],
) -> None:
    server, sandbox = desktop
    desktops = Desktops(stuck_s=0.5)
    try:
        await desktops.screenshot(sandbox)  # the first connection's one answer
        assert await desktops.act(sandbox, parse_action({"action": "move", "x": 3, "y": 1})) == {
            "action": "move"
        }
        assert server.pointer == [(0, 3, 1, 0), (1, 3, 1, 0)]
    finally:
        await desktops.close()

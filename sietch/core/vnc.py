"""The host's view of a desktop sandbox's screen: a small RFB (VNC) client.

Screenshots are not taken inside the guest: encoding a 1280x800 PNG in an
emulated CPU costs hundreds of milliseconds, and even moving a raw dump through
the agent costs a process start. Instead Sietch keeps one RFB connection per
desktop sandbox to its VNC server (the guest's own port, reached through the
sandbox's network namespace, never a host port) and a copy of the framebuffer
on the host. Updates are incremental and raw (no compression to run in the
guest), so an unchanged screen costs one small round trip; the host encodes
(see :mod:`sietch.core.desktop`).

Freshness: :meth:`VncClient.frame` sends an incremental request for the whole
screen and, in the same write, a non-incremental one for the pixel at (0, 0).
The server must answer the latter, and answers both at once, so the first
update that covers (0, 0) after the request carries every change the X server
had when it read the request. No request is left pending between frames, so
the server never sends updates nobody asked for.

RFB 3.8, VNC authentication (DES, from ``cryptography``), 32-bit true colour,
encodings Raw, CopyRect and DesktopSize (RandR resizes), and Cursor: a client
that does not take the pointer's shape gets it drawn into the framebuffer,
and a screenshot of a click's spot showed the pointer instead of the screen.
Screenshots come without the pointer, as scrot's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Sequence

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from PIL import Image

from sietch.errors import PermissionDenied, Unavailable

log = logging.getLogger(__name__)

VERSION = b"RFB 003.008\n"
VNC_AUTH = 2
RAW, COPY_RECT, DESKTOP_SIZE, CURSOR = 0, 1, -223, -239
# 32 bits per pixel, depth 24, little-endian, true colour, 8 bits a channel, red at bit 16:
# the bytes are B, G, R, X, which Pillow's "BGRX" raw mode reads as is.
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
BYTES_PER_PIXEL = 4


def vnc_response(password: str, challenge: bytes) -> bytes:
    """VNC authentication: the challenge DES-encrypted with the password as key
    (its first 8 bytes, each byte's bits reversed, as the protocol has it)."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode().ljust(8, b"\0")[:8])
    # Single DES is triple DES with one key three times.
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(challenge) + encryptor.finalize()


class VncClient:
    """One RFB connection and the framebuffer it keeps; :meth:`connect` makes one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.screen = Image.new("RGB", (1, 1))
        self._full = True
        """The next request asks for every pixel: the first one, and after a resize."""
        self._waiting: list[asyncio.Future[bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.buttons = 0
        """The mask of the buttons this connection holds down."""

    @classmethod
    async def connect(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        password: str,
        timeout: float = 30.0,
    ) -> VncClient:
        """Handshake and log in; :class:`PermissionDenied` for a wrong password."""
        client = cls(reader, writer)
        try:
            async with asyncio.timeout(timeout):
                await client._handshake(password)
        except BaseException:
            await client.close()
            raise
        client._task = asyncio.ensure_future(client._receive())
        return client

    async def _read(self, n: int) -> bytes:
        try:
            return await self._reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Unavailable("the desktop's VNC server closed the connection") from exc

    async def _reason(self) -> str:
        (length,) = struct.unpack(">I", await self._read(4))
        return (await self._read(length)).decode(errors="replace")

    async def _handshake(self, password: str) -> None:
        version = await self._read(12)
        if not version.startswith(b"RFB 003."):
            raise Unavailable(f"not a VNC server: it said {version!r}")
        self._writer.write(VERSION)
        types = await self._read((await self._read(1))[0])
        if not types:
            raise Unavailable(f"the VNC server refused the connection: {await self._reason()}")
        if VNC_AUTH not in types:
            raise Unavailable(f"the VNC server offers no VNC authentication ({list(types)})")
        self._writer.write(bytes([VNC_AUTH]))
        self._writer.write(vnc_response(password, await self._read(16)))
        (result,) = struct.unpack(">I", await self._read(4))
        if result != 0:
            raise PermissionDenied(f"the VNC server refused the password: {await self._reason()}")
        self._writer.write(b"\x01")  # shared: people watching stay connected
        width, height = struct.unpack(">HH", await self._read(4))
        await self._read(16)  # the server's pixel format: ours replaces it
        await self._reason()  # the desktop's name
        self.screen = Image.new("RGB", (width, height))
        encodings = (COPY_RECT, RAW, DESKTOP_SIZE, CURSOR)
        self._writer.write(b"\x00\x00\x00\x00" + PIXEL_FORMAT)
        self._writer.write(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        await self._writer.drain()

    @property
    def connected(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def has_frame(self) -> bool:
        """Whether the whole screen has come; the next frame asks only for changes."""
        return not self._full

    @property
    def size(self) -> tuple[int, int]:
        return self.screen.size

    async def frame(self, timeout: float = 30.0) -> Image.Image:
        """A copy of the screen as it is now (see the module's docstring)."""
        async with self._lock, self._deadline(timeout):
            await self._refresh()
            return self.screen.copy()

    async def pointer(self, events: Sequence[tuple[int, int, int]], timeout: float = 30.0) -> None:
        """Send pointer events (x, y, buttons mask); returns once the server has applied
        them (it answers the request sent after them only once it has read them). Events
        and request go as one write: through QEMU's user-mode network a second small write
        right after the first reached the guest ~40 ms late (30 clicks: 44 vs 2.5 ms)."""
        async with self._lock, self._deadline(timeout):
            await self._refresh(b"".join(struct.pack(">BBHH", 5, m, x, y) for x, y, m in events))

    async def _refresh(self, before: bytes = b"") -> None:
        """Send ``before`` with a request for the changes, and wait for them; ask for all of
        the screen again while it was resized meanwhile."""
        while await self._request(before):
            before = b""

    @contextlib.asynccontextmanager
    async def _deadline(self, timeout: float) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(timeout):
                yield
        except TimeoutError:
            raise Unavailable(f"the desktop sent no screen update within {timeout:g}s") from None

    async def _request(self, before: bytes = b"") -> bool:
        """Ask for the changes (after ``before``, in the same write) and wait for them; True
        if the screen was resized meanwhile."""
        if self._task is None or self._task.done():
            raise Unavailable("the connection to the desktop's VNC server is closed")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        width, height = self.screen.size
        try:
            if self._full:
                self._writer.write(before + struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
            else:
                self._writer.write(
                    before
                    + struct.pack(">BBHHHH", 3, 1, 0, 0, width, height)
                    + struct.pack(">BBHHHH", 3, 0, 0, 0, 1, 1)
                )
            await self._writer.drain()
            return await done
        finally:
            if done in self._waiting:
                self._waiting.remove(done)

    async def _receive(self) -> None:
        """Apply every message the server sends, until the connection ends."""
        try:
            while True:
                kind = (await self._read(1))[0]
                if kind == 0:
                    await self._update()
                elif kind == 1:  # colour map entries: unused in true colour
                    _, count = struct.unpack(">xHH", await self._read(5))
                    await self._read(6 * count)
                elif kind == 3:  # the guest's clipboard (read through xclip instead)
                    (length,) = struct.unpack(">3xI", await self._read(7))
                    await self._read(length)
                elif kind != 2:  # 2 is the bell
                    raise Unavailable(f"the VNC server sent an unknown message ({kind})")
        except Exception as exc:
            error = exc if isinstance(exc, Unavailable) else Unavailable(f"VNC client: {exc}")
            log.debug("VNC connection ended: %s", error.message)
            for done in self._waiting:
                if not done.done():
                    done.set_exception(error)

    async def _update(self) -> None:
        waiting = list(self._waiting)  # only requests sent before this update began
        (count,) = struct.unpack(">xH", await self._read(3))
        fresh = resized = False
        for _ in range(count):
            x, y, w, h, encoding = struct.unpack(">HHHHi", await self._read(12))
            if encoding == RAW:
                data = await self._read(w * h * BYTES_PER_PIXEL)
                rect = Image.frombuffer("RGB", (w, h), data, "raw", "BGRX", 0, 1)
                self.screen.paste(rect, (x, y))
            elif encoding == COPY_RECT:
                sx, sy = struct.unpack(">HH", await self._read(4))
                self.screen.paste(self.screen.crop((sx, sy, sx + w, sy + h)), (x, y))
            elif encoding == DESKTOP_SIZE:
                self.screen = Image.new("RGB", (w, h))
                resized = True
                continue
            elif encoding == CURSOR:  # the pointer's shape and mask: not part of the screen
                await self._read(w * h * BYTES_PER_PIXEL + (w + 7) // 8 * h)
                continue
            else:
                raise Unavailable(f"the VNC server sent an encoding not asked for ({encoding})")
            fresh = fresh or (x == 0 and y == 0 and w > 0 and h > 0)
        self._full = resized or (self._full and not fresh)
        if fresh or resized:
            for done in waiting:
                if not done.done():
                    done.set_result(resized)

    async def close(self) -> None:
        """End the connection; a frame or pointer call waiting on it fails at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for done in self._waiting:
            if not done.done():
                done.set_exception(Unavailable("the connection to the desktop's VNC server closed"))
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()

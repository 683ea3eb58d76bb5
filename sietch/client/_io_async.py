"""The asyncio side of the few things the two SDKs must do differently.

:mod:`sietch.client._async` is written once, for asyncio, and
``scripts/unasync.py`` derives :mod:`sietch.client._sync` from it; where a
blocking client cannot simply drop the ``await``, the async client calls a
helper from here and the sync one calls its namesake in
:mod:`sietch.client._io_sync`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import IO, Any

from websockets.asyncio.client import ClientConnection, connect

from sietch.client._core import CHUNK, as_bytes

AsyncOutputCallback = Callable[[bytes], Awaitable[Any] | Any]
AsyncData = (
    bytes
    | bytearray
    | memoryview
    | str
    | IO[bytes]
    | IO[str]
    | Iterable[bytes]
    | AsyncIterable[bytes]
)


async def to_thread(func: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call (a user's file object) off the event loop."""
    return await asyncio.to_thread(func, *args)


async def call_back(callback: AsyncOutputCallback | None, data: bytes) -> None:
    """Hand output to a plain or an async callback."""
    if callback is not None and inspect.isawaitable(ret := callback(data)):
        await ret


def chunks(data: AsyncData) -> bytes | AsyncIterator[bytes]:
    """Bytes as they are; everything else streamed (blocking file reads off the loop)."""
    if isinstance(data, bytes | bytearray | memoryview | str):
        return as_bytes(data) if isinstance(data, str) else bytes(data)
    if isinstance(data, AsyncIterable):

        async def from_async() -> AsyncIterator[bytes]:
            async for chunk in data:
                yield as_bytes(chunk)

        return from_async()
    read = getattr(data, "read", None)
    if read is not None:

        async def from_file() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(read, CHUNK):
                yield as_bytes(chunk)

        return from_file()

    async def from_iterable() -> AsyncIterator[bytes]:
        for chunk in data:
            yield as_bytes(chunk)

    return from_iterable()


async def sleep(seconds: float) -> None:
    """A polite client's wait before retrying (see :class:`sietch.client._core.Backoff`)."""
    await asyncio.sleep(seconds)


async def ws_connect(uri: str, **options: Any) -> ClientConnection:
    return await connect(uri, **options)


async def ws_recv(ws: ClientConnection, timeout: float | None) -> str | bytes:
    """The next message; ``TimeoutError`` if none came within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        return await ws.recv()

"""The blocking side of the few things the two SDKs must do differently.

:mod:`sietch.client._sync` is generated from :mod:`sietch.client._async` by
``scripts/unasync.py``; it calls these where the async client calls their
namesakes in :mod:`sietch.client._io_async`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from websockets.sync.client import ClientConnection, connect

from sietch.client._core import CHUNK, as_bytes

OutputCallback = Callable[[bytes], Any]
Data = bytes | bytearray | memoryview | str | IO[bytes] | IO[str] | Iterable[bytes]


def to_thread(func: Callable[..., Any], *args: Any) -> Any:
    """A blocking client just makes the call."""
    return func(*args)


def call_back(callback: OutputCallback | None, data: bytes) -> None:
    if callback is not None:
        callback(data)


def chunks(data: Data) -> bytes | Iterator[bytes]:
    """Bytes as they are; file objects and iterables streamed in chunks."""
    if isinstance(data, bytes | bytearray | memoryview | str):
        return as_bytes(data) if isinstance(data, str) else bytes(data)
    read = getattr(data, "read", None)
    if read is not None:

        def from_file() -> Iterator[bytes]:
            while chunk := read(CHUNK):
                yield as_bytes(chunk)

        return from_file()
    return (as_bytes(c) for c in data)


def sleep(seconds: float) -> None:
    """A polite client's wait before retrying (see :class:`sietch.client._core.Backoff`)."""
    time.sleep(seconds)


def ws_connect(uri: str, **options: Any) -> ClientConnection:
    # legacy=True: a connection object to keep, not a with block
    return connect(uri, legacy=True, **options)


def ws_recv(ws: ClientConnection, timeout: float | None) -> str | bytes:
    """The next message; ``TimeoutError`` if none came within ``timeout`` seconds."""
    return ws.recv(timeout)

"""A readers-writer lock for asyncio: many shared holders, or one exclusive holder.

A sandbox's agent serves any number of commands and file transfers at once
(shared), but a snapshot, pause or resume stops the VM under them and a
port or policy change rewires it (exclusive). The lock prefers writers: once
an exclusive request waits, new shared requests queue behind it, so a stream
of execs cannot starve a snapshot.

Every state change and wake-up is synchronous, so a holder cancelled while it
releases never leaves the counts wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class RWLock:
    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    async def acquire_shared(self) -> None:
        await self._until(lambda: not self._writer and not self._writers_waiting)
        self._readers += 1

    def release_shared(self) -> None:
        self._readers -= 1
        self._wake()

    async def acquire_exclusive(self, timeout: float | None = None) -> None:
        """Raises TimeoutError if the holders in flight don't let go within ``timeout``."""
        self._writers_waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._until(lambda: not self._writer and not self._readers)
        finally:
            self._writers_waiting -= 1
            self._wake()  # shared requests queued behind us go on if we gave up
        self._writer = True

    def release_exclusive(self) -> None:
        self._writer = False
        self._wake()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        await self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    async def idle(self, timeout: float) -> None:
        """Wait, at most ``timeout``, until nobody holds the lock."""
        try:
            await self.acquire_exclusive(timeout)
        except TimeoutError:
            return
        self.release_exclusive()

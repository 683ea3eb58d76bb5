"""The exposed host ports of sleeping (hibernated) sandboxes: kept, and a knock wakes them.

A hibernated sandbox has no QEMU and no relays, but its exposed host ports
stay its own: :class:`Parking` listens on them. A connection there wakes the
sandbox (``wake``) and waits; the woken sandbox's relays take the very same
listening sockets over (:meth:`Parking.take`, through
:class:`~sietch.network.relay.RelayHooks`), so the host ports stay the same and
whatever connects meanwhile waits in the listen backlog instead of being
refused. The waiting connection is then carried over loopback to its port,
which is the new relay's by then.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sietch.network.relay import CHUNK, HOST, bridge, held

log = logging.getLogger(__name__)


def listen(host_port: int) -> socket.socket:
    """A listening TCP socket on the host's loopback (as a relay's: SO_REUSEADDR)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, host_port))
        sock.listen(100)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Spot:
    sandbox_id: str
    sock: socket.socket
    """The listening socket the woken relay takes over."""
    server: asyncio.Server
    """Accepts on a duplicate of ``sock``: closing it leaves ``sock`` (and its backlog)."""


class Parking:
    """Listeners on sleeping sandboxes' host ports; one owner (the manager) for them all."""

    def __init__(self, wake: Callable[[str], Awaitable[object]]) -> None:
        self._wake = wake
        self._spots: dict[int, _Spot] = {}
        self._connections: set[asyncio.Task[Any]] = set()

    def ports(self, sandbox_id: str) -> list[int]:
        return [port for port, spot in self._spots.items() if spot.sandbox_id == sandbox_id]

    async def park(self, sandbox_id: str, host_ports: Iterable[int]) -> None:
        """Listen on the sandbox's host ports that are still free (again: a no-op)."""
        for port in host_ports:
            if port in self._spots:
                continue
            try:
                sock = listen(port)
            except OSError as exc:
                log.warning("sandbox %s: host port %d is taken (%s)", sandbox_id, port, exc)
                continue
            try:
                knock = functools.partial(self._knock, sandbox_id, port)
                server = await asyncio.start_server(knock, sock=sock.dup(), limit=CHUNK)
            except BaseException:
                sock.close()
                raise
            self._spots[port] = _Spot(sandbox_id, sock, server)

    def take(self, sandbox_id: str, host_port: int) -> socket.socket | None:
        """The listening socket of the sandbox's ``host_port`` for its new relay (None: not
        parked); connections from now on wait in the backlog for that relay."""
        spot = self._spots.get(host_port)
        if spot is None or spot.sandbox_id != sandbox_id:
            return None
        del self._spots[host_port]
        spot.server.close()
        return spot.sock

    def release(self, sandbox_id: str, host_ports: Iterable[int] | None = None) -> None:
        """Stop listening on the sandbox's host ports (all of them: None)."""
        for port in self.ports(sandbox_id) if host_ports is None else host_ports:
            if (sock := self.take(sandbox_id, port)) is not None:
                sock.close()

    async def close(self) -> None:
        for spot in list(self._spots.values()):
            self.release(spot.sandbox_id)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _knock(
        self,
        sandbox_id: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Wake the sandbox, then carry the connection to its (taken over) port; if it can't
        be woken (auto_resume off, a quota), the connection is closed."""
        with held(self._connections):
            try:
                await self._wake(sandbox_id)
            except Exception as exc:  # the client sees the connection end
                log.info("sandbox %s: a connection to port %d did not wake it: %s",
                         sandbox_id, port, exc)  # fmt: skip
                writer.transport.abort()
                return
            inner = functools.partial(asyncio.open_connection, HOST, port, limit=CHUNK)
            await bridge((reader, writer), inner, self._connections)

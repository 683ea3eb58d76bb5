"""The byte stream to the host, and noticing the host come and go.

In the VM that is a virtio-serial port. Its guest end behaves unlike a socket:
it can be opened only once (so the agent opens it once, read-write, and keeps
the descriptor for its whole life); while no host is connected, read() returns
0, poll() reports POLLHUP and writes would block. Polling it while the host is
away would spin, so the reader is removed then and the agent waits for SIGIO,
which the kernel sends when the host side opens or closes (with O_ASYNC set).
SIGIO is also sent for every arriving buffer, so O_ASYNC is switched on only
while the host is away; while it is connected the reader sees read() == 0 when
it leaves.

For development and tests, ``--connect PATH`` uses a unix socket instead:
end of file means the host went away, and the agent reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import select
import signal

from sietch.agent import protocol as P
from sietch.agent.guest.mux import Mux

log = logging.getLogger(__name__)

SYSFS_PORTS = "/sys/class/virtio-ports"
POLL_FALLBACK = 0.1
"""Seconds between checks for the host when SIGIO cannot be used."""
POLL_SAFETY = 1.0
"""Seconds between checks for the host even with SIGIO, in case one is lost."""


def find_port(name: str = P.PORT_NAME) -> str | None:
    """Path of the /dev node of the virtio-serial port called ``name``, if present."""
    try:
        ports = sorted(os.listdir(SYSFS_PORTS))
    except OSError:
        return None
    for port in ports:
        try:
            with open(f"{SYSFS_PORTS}/{port}/name") as f:
                if f.read().strip() == name and os.path.exists(f"/dev/{port}"):
                    return f"/dev/{port}"
        except OSError:
            continue
    return None


async def wait_for_port(name: str = P.PORT_NAME) -> str:
    """The port device appears once virtio_console has probed; wait for it."""
    delay = 0.02
    waited = 0.0
    while True:
        path = find_port(name)
        if path is not None:
            return path
        if waited >= 5.0:
            log.warning("virtio-serial port %r not found yet; still looking", name)
            waited = 0.0
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 1.0)


class VirtioPort:
    """The guest end of the virtio-serial port, opened once for the agent's life."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN | select.POLLOUT)
        self._sigio = False

    def _host_connected(self) -> bool:
        return not any(ev & select.POLLHUP for _, ev in self._poll.poll(0))

    def _set_async(self, on: bool) -> None:
        if not self._sigio:
            return
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        flags = flags | os.O_ASYNC if on else flags & ~os.O_ASYNC
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags)

    async def serve(self, mux: Mux) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        try:
            # The handler must exist before O_ASYNC: SIGIO's default action kills.
            loop.add_signal_handler(signal.SIGIO, wake.set)
            fcntl.fcntl(self.fd, fcntl.F_SETOWN, os.getpid())
            self._sigio = True
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("no SIGIO on %s (%s): polling every %.1fs", self.path, exc, POLL_FALLBACK)
        interval = POLL_SAFETY if self._sigio else POLL_FALLBACK
        log.info("serving on %s", self.path)
        try:
            while True:
                self._set_async(True)
                # Checked after O_ASYNC is on, so a connect in between is not missed.
                while not self._host_connected():
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), interval)
                self._set_async(False)
                gone = asyncio.Event()
                mux.attach(self.fd, gone.set)
                await gone.wait()
        finally:
            mux.detach()
            if self._sigio:
                loop.remove_signal_handler(signal.SIGIO)


class FrontPort:
    """The socket to sietch-front, which owns the virtio port (see sietch/agent/fast).

    The front is the host as far as this agent can tell: it sends SYNC and forwards the
    streams it does not serve itself. Should it die, the port is free again, and the
    agent serves it itself from then on.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)  # the mux reads until EAGAIN

    async def serve(self, mux: Mux) -> None:
        log.info("serving through sietch-front (fd %d)", self.fd)
        gone = asyncio.Event()
        try:
            mux.attach(self.fd, gone.set)
            await gone.wait()
        finally:
            mux.detach()
        log.error("sietch-front went away: serving the port directly")
        os.close(self.fd)
        await VirtioPort(await wait_for_port()).serve(mux)


class UnixPort:
    """A unix socket standing in for the port: the host listens, the agent connects."""

    def __init__(self, path: str, give_up: float | None = None) -> None:
        self.path = path
        self.give_up = give_up
        """Seconds without a host after which serve() returns (None: never)."""

    async def serve(self, mux: Mux) -> None:
        import socket

        loop = asyncio.get_running_loop()
        delay = 0.02
        down_since = loop.time()
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, self.path)
            except OSError as exc:
                sock.close()
                if self.give_up is not None and loop.time() - down_since > self.give_up:
                    log.info(
                        "no host at %s for %.0fs (%s): giving up", self.path, self.give_up, exc
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            delay = 0.02
            log.info("connected to %s", self.path)
            gone = asyncio.Event()
            try:
                mux.attach(sock.fileno(), gone.set)
                await gone.wait()
            finally:
                mux.detach()
                sock.close()
            down_since = loop.time()

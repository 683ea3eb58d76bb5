"""Network namespaces made for sandboxes, held by file descriptor rather than by name.

A namespace made by ``unshare(2)`` on a short-lived thread and kept by an open
fd has no entry in ``/run/netns``: nothing of it can outlive its users. It
goes when the last fd and the last process in it (the sandbox's QEMU) go, so
a crash leaves nothing behind to clean up.

Sockets are bound to the namespace they were made in, whatever thread later
uses them: :func:`socket_in` switches the calling thread into a namespace
only for the ``socket()`` call itself.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from sietch.errors import NetworkError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _own() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def create() -> int:
    """A new network namespace with its loopback up; returns an fd holding it.

    Needs CAP_SYS_ADMIN (root): :class:`Unsupported` otherwise.
    """
    result: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        # This thread moves into the new namespace and then ends: the
        # process's other threads never leave their own.
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            fd = _own()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                ifreq = struct.pack("16sH14x", b"lo", 0)
                flags = struct.unpack("16sH14x", fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq))[1]
                fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
            result.append(fd)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name="sietch-netns")
    thread.start()
    thread.join()
    if errors:
        exc = errors[0]
        if isinstance(exc, PermissionError):
            raise NetworkError("isolated sandbox networks need Sietch to run as root") from exc
        raise exc
    return result[0]


def call_in(namespace: int, fn: Callable[[], T]) -> T:
    """``fn()`` with the calling thread in ``namespace`` (keep it short and synchronous)."""
    home = _own()
    try:
        _check(_libc.setns(namespace, CLONE_NEWNET), "setns")
        try:
            return fn()
        finally:
            _check(_libc.setns(home, CLONE_NEWNET), "setns back")
    finally:
        os.close(home)


def socket_in(
    namespace: int, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A non-blocking socket that lives in ``namespace``."""
    sock = call_in(namespace, lambda: socket.socket(family, kind))
    sock.setblocking(False)
    return sock


def of_process(pid: int) -> int:
    """An fd holding the network namespace process ``pid`` runs in (for re-adoption)."""
    return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)

"""A minimal RFB client over the desktop viewer's WebSocket, run on the host.

Enough to log in (VncAuth, DES from the host's openssl as in ``rfb_probe.py``),
move the pointer and ask for one pixel: the answer to that request comes after
the server has handled everything sent before it, which makes it a barrier
for "this input was (or was not) applied".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.sync.client import ClientConnection, connect

from tests.desktop.rfb_probe import des


@contextmanager
def rfb_socket(url: str, cookie: str, password: str) -> Iterator[RfbSocket]:
    """A logged-in RFB session on the WebSocket at ``url``, sending ``cookie``."""
    headers = {"Cookie": cookie}
    with connect(url, additional_headers=headers, open_timeout=30, max_size=None) as ws:
        yield RfbSocket(ws, password)


class RfbSocket:
    def __init__(self, ws: ClientConnection, password: str) -> None:
        self.ws = ws
        self._buf = b""
        banner = self._recv(12)
        assert banner.startswith(b"RFB 003."), banner
        self.ws.send(b"RFB 003.008\n")
        types = self._recv(self._recv(1)[0])
        assert 2 in types, types
        self.ws.send(b"\x02")
        self.ws.send(des(password.encode(), self._recv(16)))
        assert self._recv(4) == b"\0\0\0\0", "VNC authentication failed"
        self.ws.send(b"\x01")  # shared
        self.width, self.height = struct.unpack(">HH", self._recv(4))
        self.bpp = self._recv(16)[0]
        self._recv(struct.unpack(">I", self._recv(4))[0])  # the desktop's name

    def _recv(self, n: int) -> bytes:
        while len(self._buf) < n:
            message = self.ws.recv(timeout=60)
            assert isinstance(message, bytes), message
            self._buf += message
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def pointer(self, x: int, y: int) -> None:
        self.ws.send(struct.pack(">BBHH", 5, 0, x, y))

    def key(self, keysym: int) -> None:
        self.ws.send(struct.pack(">BBxxI", 4, 1, keysym) + struct.pack(">BBxxI", 4, 0, keysym))

    def barrier(self) -> None:
        """Ask for one pixel and wait for it: what was sent before has been handled."""
        self.ws.send(struct.pack(">BBHHHH", 3, 0, 0, 0, 1, 1))
        while True:
            kind = self._recv(1)[0]
            if kind == 0:  # FramebufferUpdate, raw rectangles only (no encodings were set)
                self._recv(1)
                for _ in range(struct.unpack(">H", self._recv(2))[0]):
                    _, _, w, h, encoding = struct.unpack(">HHHHi", self._recv(12))
                    assert encoding == 0, encoding
                    self._recv(w * h * self.bpp // 8)
                return
            if kind == 2:  # Bell
                continue
            if kind == 3:  # ServerCutText
                self._recv(3)
                self._recv(struct.unpack(">I", self._recv(4))[0])
                continue
            raise AssertionError(f"unexpected RFB message {kind}")

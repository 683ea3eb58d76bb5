"""The server's half of a view-only desktop: client input never reaches the VNC server.

noVNC's ``viewOnly`` keeps the page from sending input, but the page runs in
the viewer's browser; a view-only session's WebSocket could be driven by
anything holding its cookie. So the relay reads the client's side of the RFB
protocol (RFC 6143 and the extensions noVNC speaks) and passes on only the
handshake and the messages that ask for pixels. Key and pointer events,
clipboard, resizing and power (xvp) messages are dropped; a message it does
not know ends the connection, since its length cannot be known (fail closed).
"""

from __future__ import annotations

import struct

from sietch.errors import PermissionDenied

_VERSION_LEN = 12
_NONE, _VNC_AUTH = 1, 2
# Client-to-server message types: fixed length, or how to read the length.
_SET_PIXEL_FORMAT, _SET_ENCODINGS, _UPDATE_REQUEST = 0, 2, 3
_KEY, _POINTER, _CUT_TEXT = 4, 5, 6
_CONTINUOUS_UPDATES, _FENCE, _XVP, _SET_DESKTOP_SIZE, _QEMU = 150, 248, 250, 251, 255
_QEMU_KEY = 0
_FIXED = {_SET_PIXEL_FORMAT: 20, _UPDATE_REQUEST: 10, _KEY: 8, _POINTER: 6}
_FIXED |= {_CONTINUOUS_UPDATES: 10, _XVP: 4}
_DROPPED = frozenset({_KEY, _POINTER, _CUT_TEXT, _XVP, _SET_DESKTOP_SIZE, _QEMU})


class ViewOnlyFilter:
    """Feed it the client's bytes in order; it returns what may go on to the server."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._stage = "version"
        self._skip = 0
        """Bytes of a dropped message still to come."""

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    break
            if not self._buf or not self._step(out):
                break
        return bytes(out)

    def _take(self, n: int, out: bytearray) -> bool:
        if len(self._buf) < n:
            return False
        out += self._buf[:n]
        del self._buf[:n]
        return True

    def _step(self, out: bytearray) -> bool:
        """Handle one unit at the head of the buffer; False when it is not all there yet."""
        stage = self._stage
        if stage == "version":
            version = bytes(self._buf[:_VERSION_LEN])
            if not self._take(_VERSION_LEN, out):
                return False
            # RFB 3.3: the server picks the security type, the client sends no byte.
            self._stage = "auth" if version.startswith(b"RFB 003.003") else "security"
        elif stage == "security":
            kind = self._buf[0]
            if kind not in (_NONE, _VNC_AUTH):
                raise PermissionDenied(f"a view-only session cannot use VNC security type {kind}")
            self._take(1, out)
            self._stage = "auth" if kind == _VNC_AUTH else "init"
        elif stage == "auth":  # the 16-byte VncAuth response
            if not self._take(16, out):
                return False
            self._stage = "init"
        elif stage == "init":  # ClientInit: always shared, never disconnect the others
            del self._buf[:1]
            out.append(1)
            self._stage = "messages"
        else:
            return self._message(out)
        return True

    def _message(self, out: bytearray) -> bool:
        kind = self._buf[0]
        length = self._length(kind)
        if length is None:
            return False
        if kind in _DROPPED:
            self._skip = length
            return True
        return self._take(length, out)

    def _length(self, kind: int) -> int | None:
        """The whole message's length in bytes, None until enough of it has come to tell."""
        buf = self._buf
        if kind in _FIXED:
            return _FIXED[kind]
        if kind == _SET_ENCODINGS:
            return None if len(buf) < 4 else 4 + 4 * struct.unpack_from(">H", buf, 2)[0]
        if kind == _CUT_TEXT:  # a negative length is the extended clipboard's: |length| bytes
            return None if len(buf) < 8 else 8 + abs(struct.unpack_from(">i", buf, 4)[0])
        if kind == _FENCE:
            return None if len(buf) < 9 else 9 + buf[8]
        if kind == _SET_DESKTOP_SIZE:
            return None if len(buf) < 8 else 8 + 16 * buf[6]
        if kind == _QEMU:
            if len(buf) < 2:
                return None
            if buf[1] == _QEMU_KEY:
                return 12
        raise PermissionDenied(
            f"a view-only session sent a VNC message it may not send (type {kind})"
        )

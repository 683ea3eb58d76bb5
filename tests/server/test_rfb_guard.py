"""The view-only filter (sietch.server.rfb_guard): the handshake and pixel requests pass,
input never does, and what it cannot parse ends the session."""

from __future__ import annotations

import struct

import pytest

from sietch.errors import PermissionDenied
from sietch.server.rfb_guard import ViewOnlyFilter

HANDSHAKE = b"RFB 003.008\n" + b"\x02" + bytes(range(16)) + b"\x00"
"""Version, VncAuth chosen, its 16-byte response, ClientInit (not shared)."""
PIXEL_FORMAT = b"\x00" + bytes(19)
ENCODINGS = struct.pack(">BxHii", 2, 2, 0, -223)
UPDATE = struct.pack(">BBHHHH", 3, 1, 0, 0, 1280, 800)
FENCE = struct.pack(">BxxxIB", 248, 0, 3) + b"abc"
CONTINUOUS = struct.pack(">BBHHHH", 150, 1, 0, 0, 1280, 800)
KEY = struct.pack(">BBxxI", 4, 1, 0x61)
POINTER = struct.pack(">BBHH", 5, 1, 10, 20)
CUT_TEXT = struct.pack(">Bxxxi", 6, 5) + b"hello"
EXTENDED_CUT = struct.pack(">Bxxxi", 6, -4) + b"\x01\x02\x03\x04"
DESKTOP_SIZE = struct.pack(">BxHHBx", 251, 800, 600, 1) + bytes(16)
QEMU_KEY = struct.pack(">BBHII", 255, 0, 1, 0x61, 30)
XVP = struct.pack(">BxBB", 250, 1, 2)
ALLOWED = PIXEL_FORMAT + ENCODINGS + UPDATE + FENCE + CONTINUOUS
INPUT = KEY + POINTER + CUT_TEXT + EXTENDED_CUT + DESKTOP_SIZE + QEMU_KEY + XVP


def shared(handshake: bytes) -> bytes:
    """The handshake as it reaches the server: ClientInit always asks to share."""
    return handshake[:-1] + b"\x01"


def test_input_is_dropped_and_the_rest_passes() -> None:
    """Key, pointer, clipboard, resize, QEMU key and xvp messages never reach the server."""
    stream = HANDSHAKE + ALLOWED + INPUT + UPDATE + KEY + UPDATE
    assert ViewOnlyFilter().feed(stream) == shared(HANDSHAKE) + ALLOWED + UPDATE + UPDATE


def test_byte_by_byte_is_the_same() -> None:
    """Messages split anywhere (as TCP and WebSocket frames may) are parsed the same."""
    guard = ViewOnlyFilter()
    stream = HANDSHAKE + INPUT + ALLOWED + POINTER
    out = b"".join(guard.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert out == shared(HANDSHAKE) + ALLOWED


def test_rfb_33_has_no_security_byte() -> None:
    """An RFB 3.3 client goes straight to the VncAuth response."""
    handshake = b"RFB 003.003\n" + bytes(16) + b"\x00"
    assert ViewOnlyFilter().feed(handshake + KEY + UPDATE) == shared(handshake) + UPDATE


def test_unknown_messages_and_security_types_end_the_session() -> None:
    """What the filter cannot size, or a security type it does not know, is refused."""
    with pytest.raises(PermissionDenied, match="type 77"):
        ViewOnlyFilter().feed(HANDSHAKE + b"\x4d" + bytes(20))
    with pytest.raises(PermissionDenied, match="security type 19"):
        ViewOnlyFilter().feed(b"RFB 003.008\n\x13")
    with pytest.raises(PermissionDenied, match="type 255"):
        ViewOnlyFilter().feed(HANDSHAKE + b"\xff\x01\x00\x00")

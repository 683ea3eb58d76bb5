"""Wire protocol between the host and the guest agent.

Stdlib only: this module is copied onto the guest's tools disk and imported
by the agent there, so both ends share one definition.

The transport is one byte stream (a virtio-serial port in the guest, a unix
socket on the host). Many operations run over it at once as *streams*, each
carried by frames::

    kind: u8 | stream: u32 | length: u32 | payload[length]

Kinds:

``OPEN``    host -> guest, payload JSON ``{"op": ..., ...}``: starts stream.
``MSG``     either way, payload JSON: an event (``{"type": ...}``).
``DATA``    either way, payload ``channel: u8`` + raw bytes (stdin/file body
            on channel 0, stdout 1, stderr 2).
``EOF``     either way: no more DATA from this side.
``CLOSE``   either way: the stream is finished; the peer drops its state.
``WINDOW``  either way, payload ``u32``: the sender may send that many more
            DATA payload bytes on this stream (credit-based flow control,
            every stream starts with :data:`INITIAL_WINDOW` each way).
``SYNC``    either way, payload ``MAGIC + nonce(8)``.

Reconnecting: the byte stream may break mid-frame (the host restarts, or the
VM is restored into a new QEMU process). So every host connection begins with
``SYNC``; the guest, which scans for ``MAGIC`` whenever it is not sure where a
frame starts, answers with the same ``SYNC`` and forgets every stream of the
previous connection. The host skips whatever arrives before that answer.

A stream ends with a final ``MSG`` (``{"type": "result", ...}`` or
``{"type": "error", "code": ..., "message": ...}``) followed by ``CLOSE``.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PORT_NAME = "org.sietch.agent"
"""virtio-serial port name; the guest finds its device under /sys/class/virtio-ports."""

PROTOCOL_VERSION = 1
HEADER = struct.Struct("!BII")
MAX_PAYLOAD = 1 << 20
CHUNK = 64 * 1024
"""Largest DATA payload a sender produces."""
INITIAL_WINDOW = 1 << 20
MAGIC = b"\xffSIETCH\x01"
SYNC_LEN = len(MAGIC) + 8

CHANNEL_IN = 0
CHANNEL_STDOUT = 1
CHANNEL_STDERR = 2


class Kind(enum.IntEnum):
    OPEN = 1
    MSG = 2
    DATA = 3
    EOF = 4
    CLOSE = 5
    WINDOW = 6
    SYNC = 0xFF


_KIND_VALUES = frozenset(k.value for k in Kind)


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    stream: int
    payload: bytes = b""

    def json(self) -> dict[str, Any]:
        value = json.loads(self.payload)
        if not isinstance(value, dict):
            raise ProtocolError("JSON payload is not an object")
        return value

    def data(self) -> tuple[int, bytes]:
        """(channel, bytes) of a DATA frame."""
        return self.payload[0], self.payload[1:]

    def window(self) -> int:
        return int.from_bytes(self.payload[:4], "big")


class ProtocolError(Exception):
    """The peer sent bytes that are not a frame."""


def encode(kind: Kind, stream: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, stream, len(payload)) + payload


def encode_json(kind: Kind, stream: int, obj: dict[str, Any]) -> bytes:
    return encode(kind, stream, json.dumps(obj, separators=(",", ":")).encode())


def encode_data(stream: int, channel: int, data: bytes | memoryview) -> bytes:
    return HEADER.pack(Kind.DATA, stream, len(data) + 1) + bytes((channel,)) + bytes(data)


def encode_window(stream: int, credit: int) -> bytes:
    return encode(Kind.WINDOW, stream, credit.to_bytes(4, "big"))


def encode_sync(nonce: bytes) -> bytes:
    if len(nonce) != 8:
        raise ValueError("nonce must be 8 bytes")
    return encode(Kind.SYNC, 0, MAGIC + nonce)


class Parser:
    """Incremental frame parser that can recover from a torn stream.

    In *scanning* mode (at start, and after :meth:`resync` or a malformed
    header) it discards bytes until a SYNC frame; ``want_nonce`` restricts
    that to the answer of one particular SYNC (the host side uses it).
    """

    def __init__(self, *, scanning: bool = True, want_nonce: bytes | None = None) -> None:
        self._buf = bytearray()
        self.scanning = scanning
        self.want_nonce = want_nonce
        self.skipped = 0

    def resync(self, want_nonce: bytes | None = None) -> None:
        self.scanning = True
        self.want_nonce = want_nonce

    def feed(self, data: bytes) -> Iterator[Frame]:
        self._buf += data
        while True:
            if self.scanning and not self._scan():
                return
            if len(self._buf) < HEADER.size:
                return
            kind, stream, length = HEADER.unpack_from(self._buf)
            if kind not in _KIND_VALUES or length > MAX_PAYLOAD + 1:
                self.scanning = True
                self.skipped += 1
                del self._buf[:1]
                continue
            end = HEADER.size + length
            if len(self._buf) < end:
                return
            payload = bytes(self._buf[HEADER.size : end])
            del self._buf[:end]
            yield Frame(Kind(kind), stream, payload)

    def _scan(self) -> bool:
        """Drop bytes up to the next acceptable SYNC frame; True once found."""
        target = HEADER.pack(Kind.SYNC, 0, SYNC_LEN) + MAGIC
        if self.want_nonce is not None:
            target += self.want_nonce
        at = self._buf.find(target)
        if at < 0:
            keep = len(target) - 1
            if len(self._buf) > keep:
                self.skipped += len(self._buf) - keep
                del self._buf[: len(self._buf) - keep]
            return False
        self.skipped += at
        del self._buf[:at]
        self.scanning = False
        self.want_nonce = None
        return True

"""Small helpers with no dependencies, for any layer."""

from __future__ import annotations


class Capped:
    """An output callback that keeps at most ``limit`` bytes and remembers whether it cut."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def __call__(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk

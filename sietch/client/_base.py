"""What a sync and an async sandbox share (state, argument handling; no I/O)."""

from __future__ import annotations

from sietch.client._models import SandboxInfo


class SandboxBase:
    """A sandbox on a Sietch server; its record as of the last fetch is ``info``."""

    def __init__(self, info: SandboxInfo, *, keep: bool) -> None:
        self._info = info
        self.keep = keep
        """When False, leaving the ``with`` block deletes the sandbox."""

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def info(self) -> SandboxInfo:
        return self._info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self._info.state}>"

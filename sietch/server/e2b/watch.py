"""Directory watches for envd's ``WatchDir`` and its polled watchers, by comparing listings.

The agent has no inotify channel, so a watch lists the directory (recursively if asked)
and reports what changed since the last look: new entries are CREATE, gone ones REMOVE,
a changed size or mtime WRITE, a changed mode CHMOD. Changes between two looks collapse
into one event per entry.
"""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass, field

from sietch.core.live import LiveSandbox
from sietch.core.models import FileInfo

RECURSIVE_DEPTH = 32
POLL_S = 0.25
"""How often a streamed watch looks again."""

State = dict[str, tuple[str, int, float, int]]


@dataclass
class Watch:
    """One watched directory and what it held at the last look."""

    sandbox_id: str
    path: str
    recursive: bool
    seen: State = field(default_factory=dict)
    id: str = field(default_factory=lambda: "w-" + secrets.token_hex(8))

    async def look(self, sandbox: LiveSandbox) -> State:
        entries = await sandbox.list_dir(self.path, RECURSIVE_DEPTH if self.recursive else 1)
        return {self._name(e): (e.type, e.size, e.mtime, e.mode) for e in entries}

    def _name(self, entry: FileInfo) -> str:
        return posixpath.relpath(entry.path, self.path)

    async def start(self, sandbox: LiveSandbox) -> None:
        self.seen = await self.look(sandbox)

    async def changes(self, sandbox: LiveSandbox) -> list[dict[str, str]]:
        """envd's ``FilesystemEvent``s since the last look."""
        now = await self.look(sandbox)
        events = []
        for name, (kind, size, mtime, mode) in now.items():
            before = self.seen.get(name)
            if before is None:
                events.append(_event(name, "CREATE"))
            elif before[:3] != (kind, size, mtime):
                events.append(_event(name, "WRITE"))
            elif before[3] != mode:
                events.append(_event(name, "CHMOD"))
        events.extend(_event(name, "REMOVE") for name in self.seen.keys() - now.keys())
        self.seen = now
        return events


def _event(name: str, kind: str) -> dict[str, str]:
    return {"name": name, "type": f"EVENT_TYPE_{kind}"}


watchers: dict[str, Watch] = {}
"""The polled watchers (``CreateWatcher``), by id."""

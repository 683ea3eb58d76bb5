"""Sandbox records in one SQLite file, so a restarted Sietch knows what it ran."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from sietch._util import transaction
from sietch.core.models import ImageRecord, SandboxInfo, SandboxState, SnapshotInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id         TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    info       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    name       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    info       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    id         TEXT PRIMARY KEY,
    parent_id  TEXT,
    created_at TEXT NOT NULL,
    info       TEXT NOT NULL
);
"""


class Store:
    """Thin typed access to the database; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        """One connection, used from the event loop and from worker threads (snapshot
        clean-up): without it their transactions interleave ("cannot start a transaction
        within a transaction")."""
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock)

    def _rows(self, query: str, args: tuple[str, ...] = ()) -> list[tuple[str]]:
        with self._lock:
            return self._db.execute(query, args).fetchall()

    def put(self, info: SandboxInfo) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO sandboxes (id, state, created_at, info) "
                "VALUES (?, ?, ?, ?)",
                (info.id, info.state.value, info.created_at.isoformat(), info.model_dump_json()),
            )

    def get(self, sandbox_id: str) -> SandboxInfo | None:
        rows = self._rows("SELECT info FROM sandboxes WHERE id = ?", (sandbox_id,))
        return SandboxInfo.model_validate_json(rows[0][0]) if rows else None

    def all(self, state: SandboxState | None = None) -> list[SandboxInfo]:
        query = "SELECT info FROM sandboxes"
        args: tuple[str, ...] = ()
        if state is not None:
            query, args = query + " WHERE state = ?", (state.value,)
        rows = self._rows(query + " ORDER BY created_at", args)
        return [SandboxInfo.model_validate_json(r[0]) for r in rows]

    def delete(self, sandbox_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def put_snapshot(self, info: SnapshotInfo) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots (id, parent_id, created_at, info) "
                "VALUES (?, ?, ?, ?)",
                (info.id, info.parent_id, info.created_at.isoformat(), info.model_dump_json()),
            )

    def get_snapshot(self, snapshot_id: str) -> SnapshotInfo | None:
        rows = self._rows("SELECT info FROM snapshots WHERE id = ?", (snapshot_id,))
        return SnapshotInfo.model_validate_json(rows[0][0]) if rows else None

    def all_snapshots(self) -> list[SnapshotInfo]:
        rows = self._rows("SELECT info FROM snapshots ORDER BY created_at")
        return [SnapshotInfo.model_validate_json(r[0]) for r in rows]

    def snapshot_users(self, snapshot_id: str) -> list[str]:
        """Sandboxes and snapshots whose disk (or RAM) still depends on ``snapshot_id``.

        A standalone child snapshot has copies of every layer it needs: not a user.
        """
        found = [
            s.id for s in self.all_snapshots() if s.parent_id == snapshot_id and not s.standalone
        ]
        found += [i.id for i in self.all() if i.snapshot_id == snapshot_id]
        return found

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))

    # User images (``CREATE TABLE IF NOT EXISTS``: older databases gain the table on open).

    def put_image(self, image: ImageRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO images (name, created_at, info) VALUES (?, ?, ?)",
                (image.name, image.created_at.isoformat(), image.model_dump_json()),
            )

    def get_image(self, name: str) -> ImageRecord | None:
        rows = self._rows("SELECT info FROM images WHERE name = ?", (name,))
        return ImageRecord.model_validate_json(rows[0][0]) if rows else None

    def all_images(self) -> list[ImageRecord]:
        rows = self._rows("SELECT info FROM images ORDER BY created_at")
        return [ImageRecord.model_validate_json(r[0]) for r in rows]

    def delete_image(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM images WHERE name = ?", (name,))

    def close(self) -> None:
        self._db.close()


def labels_match(info: SandboxInfo, labels: dict[str, str] | None) -> bool:
    return not labels or all(info.labels.get(k) == v for k, v in labels.items())

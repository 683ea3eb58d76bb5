"""Image records in SQLite: an older database gains the table; records round-trip."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sietch.core import images as user_images
from sietch.core.models import DEFAULT_TENANT, ImageConfig, ImageRecord
from sietch.core.store import Store


def test_old_database_gains_the_images_table(tmp_path: Path) -> None:
    """A state dir from before images opens; its sandboxes stay and images can be stored."""
    path = tmp_path / "sietch.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE sandboxes (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
        " created_at TEXT NOT NULL, info TEXT NOT NULL);"
        "CREATE TABLE snapshots (id TEXT PRIMARY KEY, parent_id TEXT,"
        " created_at TEXT NOT NULL, info TEXT NOT NULL);"
        "INSERT INTO sandboxes VALUES ('sb-1', 'dead', '2026-01-01', '{}');"
    )
    old.commit()
    old.close()
    store = Store(path)
    try:
        assert store.all_images() == []
        image = ImageRecord(
            name="app", base="default", key="k", rootfs="/x.qcow2", disk_mib=2048,
            created_at=datetime.now(UTC), config=ImageConfig(user="user", expose=[8000]),
        )  # fmt: skip
        store.put_image(image)
        assert store.get_image("app") == image
        store.delete_image("app")
        assert store.get_image("app") is None
    finally:
        store.close()
    with sqlite3.connect(path) as again:
        assert again.execute("SELECT id FROM sandboxes").fetchall() == [("sb-1",)]


def test_an_image_from_before_tenants_is_the_default_tenants(tmp_path: Path) -> None:
    """An image row written before images had a tenant reads as ``default``'s: that tenant
    (and an admin) finds it, another tenant does not, and its size counts for ``default``."""
    path = tmp_path / "sietch.db"
    Store(path).close()
    old = ImageRecord(
        name="app", base="default", key="k", rootfs="/x.qcow2", disk_mib=2048, size_bytes=5,
        created_at=datetime.now(UTC), ready=True,
    ).model_dump(mode="json")  # fmt: skip
    del old["tenant"]
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO images VALUES (?, ?, ?)", ("app", old["created_at"], json.dumps(old))
        )
    store = Store(path)
    try:
        assert (found := user_images.find(store, "app", DEFAULT_TENANT)) is not None
        assert found.tenant == DEFAULT_TENANT
        assert user_images.find(store, "app", None) == found
        assert user_images.find(store, "app", "acme") is None
        assert [i.name for i in user_images.listed(store, "acme")] == []
        assert [i.name for i in user_images.listed(store)] == ["app"]
        assert user_images.disk_bytes(store, DEFAULT_TENANT) == 5
        assert user_images.disk_bytes(store, "acme") == 0
    finally:
        store.close()

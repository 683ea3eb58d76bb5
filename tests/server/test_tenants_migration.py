"""A state dir from before tenants: its one key becomes the admin of tenant ``default``."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from sietch.core.models import SandboxInfo, SandboxState
from sietch.core.store import Store
from sietch.core.tenants import digest
from tests.conftest import short_tmpdir
from tests.server.harness import ApiServer

LEGACY_KEY = "sk-sietch-" + "legacy0key0of0a0single0key0install0000000"
OLD_ID = "sb-0123456789ab"


@pytest.fixture
def old_server() -> Iterator[ApiServer]:
    """A server started on a state dir as an older Sietch left it: a flat ``api_keys`` file
    of key hashes and a sandbox record written without a tenant."""
    state = short_tmpdir("stm")
    (state / "api_keys").write_text(digest(LEGACY_KEY) + "\n")
    (state / "api_keys").chmod(0o600)
    record = SandboxInfo(
        id=OLD_ID,
        state=SandboxState.DEAD,
        image="default",
        vcpus=1,
        memory_mib=512,
        disk_mib=2048,
        created_at=datetime.now(UTC),
        accel="tcg",
        error="its VM stopped while Sietch was not running",
    )
    Store(state / "sietch.db").close()  # the schema, then the row as the old code wrote it
    with sqlite3.connect(state / "sietch.db") as db:
        db.execute(
            "INSERT INTO sandboxes (id, state, created_at, info) VALUES (?, ?, ?, ?)",
            (
                OLD_ID,
                "dead",
                record.created_at.isoformat(),
                record.model_dump_json(exclude={"tenant"}),
            ),
        )
    server = ApiServer(state_dir=state, api_key=LEGACY_KEY)
    server.start()
    yield server
    server.cleanup()


def test_the_old_key_is_the_default_tenants_admin(old_server: ApiServer) -> None:
    """The old key works, as an admin of ``default``, and no new key was generated; the old
    record is the default tenant's, hidden from a new tenant; all this survives a restart."""
    api = old_server.url + "/api/v1"
    admin = {"Authorization": f"Bearer {LEGACY_KEY}"}
    tenant = httpx.get(f"{api}/tenant", headers=admin).json()
    assert (tenant["name"], tenant["key"], tenant["admin"]) == ("default", "legacy", True)
    assert "generated an admin API key" not in old_server.log()
    listed = httpx.get(f"{api}/sandboxes", headers=admin).json()["data"]
    assert [(s["id"], s["tenant"]) for s in listed] == [(OLD_ID, "default")]
    other = {"Authorization": f"Bearer {old_server.tenants.create_key('other', 'k')[1]}"}
    assert httpx.get(f"{api}/sandboxes", headers=other).json()["data"] == []
    assert httpx.get(f"{api}/sandboxes/{OLD_ID}", headers=other).status_code == 404
    old_server.stop()
    old_server.start()
    assert httpx.get(f"{api}/sandboxes/{OLD_ID}", headers=admin).status_code == 200
    assert (old_server.state_dir / "tenants.db").stat().st_mode & 0o777 == 0o600

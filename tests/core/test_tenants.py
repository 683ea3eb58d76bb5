"""The tenants catalog: keys, revocation seen by another connection, quotas, legacy import."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sietch.core.quotas import Quota
from sietch.core.tenants import Caller, Tenants, digest
from sietch.errors import Conflict, InvalidArgument, NotFound


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Tenants]:
    tenants = Tenants(tmp_path / "tenants.db")
    yield tenants
    tenants.close()


def test_a_key_stands_for_its_tenant(catalog: Tenants) -> None:
    """A new key resolves to its tenant and name; an admin key says so; others don't exist."""
    _, key = catalog.create_key("acme", "ci")
    _, admin = catalog.create_key("default", "root", admin=True)
    assert catalog.lookup(key) == Caller("acme", "ci", admin=False)
    assert catalog.lookup(admin) == Caller("default", "root", admin=True)
    assert catalog.lookup(key + "x") is None
    assert catalog.lookup(key).scope == "acme"  # type: ignore[union-attr]
    assert catalog.lookup(admin).scope is None  # type: ignore[union-attr]


def test_only_the_hash_is_stored(catalog: Tenants) -> None:
    """The database holds the key's digest, never the key, and is readable by its owner only."""
    _, key = catalog.create_key("acme", "ci")
    stored = b"".join(p.read_bytes() for p in catalog.path.parent.glob("tenants.db*"))
    assert key.encode() not in stored
    assert catalog.path.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(catalog.path) as db:
        assert digest(key) in {d for (d,) in db.execute("SELECT digest FROM api_keys")}


def test_revoke_from_another_connection_is_seen_at_once(tmp_path: Path) -> None:
    """A key revoked through another connection (the CLI) is refused on the next lookup."""
    server = Tenants(tmp_path / "tenants.db")
    cli = Tenants(tmp_path / "tenants.db")
    record, key = cli.create_key("acme", "ci")
    assert server.lookup(key) is not None
    cli.revoke(record.name, "acme")
    assert server.lookup(key) is None
    assert [k.name for k in cli.keys(revoked=True)] == ["ci"]
    assert cli.keys() == []


def test_key_names_are_unique_among_live_keys(catalog: Tenants) -> None:
    """A tenant can't have two live keys of one name; once revoked, the name is free."""
    catalog.create_key("acme", "ci")
    with pytest.raises(Conflict):
        catalog.create_key("acme", "ci")
    catalog.create_key("other", "ci")
    with pytest.raises(Conflict):  # ambiguous without the tenant
        catalog.revoke("ci")
    catalog.revoke("ci", "acme")
    catalog.create_key("acme", "ci")
    with pytest.raises(NotFound):
        catalog.revoke("nope")


def test_names_are_checked(catalog: Tenants) -> None:
    """Tenant and key names are short plain words."""
    with pytest.raises(InvalidArgument):
        catalog.create_key("Has Space", "ci")
    with pytest.raises(InvalidArgument):
        catalog.create_key("acme", "")


def test_quota_changes_field_by_field(tmp_path: Path) -> None:
    """``set_quota`` changes only the limits named; None makes one unlimited; the server's
    connection sees the change at once."""
    server = Tenants(tmp_path / "tenants.db")
    cli = Tenants(tmp_path / "tenants.db")
    assert server.quota("acme") == Quota()
    cli.set_quota("acme", max_sandboxes=3, max_vcpus=4)
    cli.set_quota("acme", max_vcpus=None, create_rate_per_min=6)
    assert server.quota("acme") == Quota(max_sandboxes=3, create_rate_per_min=6)
    assert [t.name for t in cli.tenants()] == ["acme"]


def test_legacy_keys_become_admins_of_default_once(tmp_path: Path) -> None:
    """Each digest of an old ``api_keys`` file is an admin key of ``default``; a restart does
    not import them again, so a key revoked since stays revoked."""
    old_key = "sk-sietch-old"
    legacy = tmp_path / "api_keys"
    legacy.write_text(digest(old_key) + "\n")
    catalog = Tenants(tmp_path / "tenants.db")
    assert catalog.import_legacy(legacy) == 1
    assert catalog.lookup(old_key) == Caller("default", "legacy", admin=True)
    assert catalog.ensure_admin() is None
    catalog.revoke("legacy")
    assert catalog.import_legacy(legacy) == 0
    assert catalog.lookup(old_key) is None


def test_first_start_makes_one_admin_key(catalog: Tenants) -> None:
    """With no key at all, one admin key of ``default`` is made; with one, none."""
    key = catalog.ensure_admin()
    assert key is not None and catalog.lookup(key) == Caller("default", "admin", admin=True)
    assert catalog.ensure_admin() is None


def test_defaults_apply_until_a_tenant_has_its_own(tmp_path: Path) -> None:
    """SIETCH_TENANT_QUOTA's limits are every tenant's; a tenant's own replace them one by
    one, an explicit 'unlimited' (None) too; a bad default is refused by name."""
    Tenants(tmp_path / "tenants.db").set_quota("acme", max_vcpus=None, create_burst=3)
    server = Tenants(tmp_path / "tenants.db", {"max_sandboxes": 5, "max_vcpus": 8})
    assert server.quota("other") == Quota(max_sandboxes=5, max_vcpus=8)
    assert server.quota("acme") == Quota(max_sandboxes=5, max_vcpus=None, create_burst=3)
    with pytest.raises(InvalidArgument, match="SIETCH_TENANT_QUOTA: max_sandbox"):
        Tenants(tmp_path / "tenants.db", {"max_sandbox": 5})

"""The cluster catalog on a real PostgreSQL: migrations, nodes, placements, tenants."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb
from tenacity import Retrying, stop_after_delay, wait_fixed

from sietch.cluster import migrate
from sietch.cluster.catalog import RESERVATION_TTL_S, Capacity, Catalog
from sietch.cluster.grants import GrantTable
from sietch.cluster.tenants import ClusterTenants
from sietch.core.quotas import Quota, Usage
from sietch.core.tenants import Caller
from sietch.errors import AuthenticationError, Conflict, InvalidArgument, NotFound
from sietch.server.browser_auth import KEEP_ENDED_S
from sietch.server.console.logins import SharedLogins

CAPACITY = Capacity(2, 8192, 100_000, 64, 6000, 90_000, 0.5, 0, "tcg", "10.0.2")


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    made = Catalog(catalog_url, node_timeout_s=0.5)
    yield made
    made.close()


def _record(sandbox_id: str, tenant: str = "acme", state: str = "running") -> dict[str, object]:
    return {"id": sandbox_id, "tenant": tenant, "state": state, "vcpus": 1, "memory_mib": 256}


def _snap(
    snapshot_id: str,
    tenant: str = "acme",
    size: int = 1,
    template: bool = False,
    hibernation: bool = False,
) -> dict[str, object]:
    """A snapshot's record as a node reports it (what the catalog reads of it)."""
    return {
        "id": snapshot_id,
        "tenant": tenant,
        "size_bytes": size,
        "template": template,
        "hibernation": hibernation,
        "vcpus": 1,
        "memory_mib": 256,
    }


def test_migrates_from_empty(catalog_url: str) -> None:
    """An empty database is brought to the newest revision, every table there."""
    assert migrate.current(catalog_url) is None
    migrate.upgrade(catalog_url)
    assert migrate.current(catalog_url) == migrate.head()
    with psycopg.connect(catalog_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    made = {"nodes", "sandboxes", "reservations", "snapshots", "images", "tenants", "api_keys"}
    assert made <= tables
    migrate.upgrade(catalog_url)  # a second start finds nothing to do
    assert migrate.current(catalog_url) == migrate.head()


def test_migrates_from_the_previous_revision(catalog_url: str) -> None:
    """A catalog at the revision before the newest keeps its rows through the upgrade."""
    migrate.upgrade(catalog_url, "0001")
    old = Catalog(catalog_url, migrate_schema=False)
    old.register("n1", "http://10.0.0.1:7001", CAPACITY)
    old.close()
    with psycopg.connect(catalog_url) as conn:  # as the code of that revision wrote it
        conn.execute(
            "INSERT INTO sandboxes (id, node, tenant, state, vcpus, memory_mib, record) "
            "VALUES ('sb-1', 'n1', 'acme', 'running', 1, 256, %s)",
            (Jsonb(_record("sb-1")),),
        )
    catalog = Catalog(catalog_url)
    try:
        assert migrate.current(catalog_url) == migrate.head() != "0001"
        assert [n.name for n in catalog.nodes()] == ["n1"]
        assert catalog.locate("sb-1") is not None
        _, key = ClusterTenants(catalog).create_key("acme", "ci")
        assert ClusterTenants(catalog).lookup(key) == Caller("acme", "ci")
    finally:
        catalog.close()


def test_snapshot_rows_written_before_records_were_kept(catalog_url: str) -> None:
    """A catalog at 0004 (snapshots without their record) upgraded to the newest: its
    snapshot's holders are kept, listed without a record until its node reports one."""
    migrate.upgrade(catalog_url, "0004")
    old = Catalog(catalog_url, migrate_schema=False)
    old.register("n1", "http://10.0.0.1:7001", CAPACITY)
    old.close()
    with psycopg.connect(catalog_url) as conn:  # as the code of 0004 wrote it
        conn.execute(
            "INSERT INTO snapshots (id, node, tenant, size_bytes, template) "
            "VALUES ('snap-1', 'n1', 'acme', 10, false)"
        )
    catalog = Catalog(catalog_url)
    try:
        assert migrate.current(catalog_url) == migrate.head()
        assert catalog.snapshot_holders("snap-1") == [("n1", "acme")]
        assert catalog.snapshots_on(["n1"], "acme") == []
        catalog.report_snapshots("n1", {"snap-1": _snap("snap-1", size=10)})
        assert [r["id"] for r in catalog.snapshots_on(["n1"], "acme")] == ["snap-1"]
    finally:
        catalog.close()


def test_a_silent_node_is_unreachable_until_it_heartbeats(catalog: Catalog) -> None:
    """Registration makes a node reachable; silence past node_timeout_s makes it
    unreachable (once marked); a heartbeat brings it back."""
    catalog.register("n1", "http://10.0.0.1:7001", CAPACITY)
    (node,) = catalog.nodes()
    assert node.reachable and node.capacity == CAPACITY and node.url.endswith(":7001")
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert not catalog.nodes()[0].reachable
    assert catalog.mark_unreachable() == ["n1"]
    assert catalog.mark_unreachable() == []
    assert catalog.heartbeat("n1", CAPACITY)
    assert catalog.nodes()[0].reachable
    assert not catalog.heartbeat("n2", CAPACITY)  # never registered: it must register


def test_reports_say_where_each_sandbox_is(catalog: Catalog) -> None:
    """Reported sandboxes are located and counted per tenant and node; a complete report
    drops what the node no longer holds, a partial one only what it names."""
    catalog.register("n1", "http://a", CAPACITY)
    catalog.register("n2", "http://b", CAPACITY)
    catalog.report("n1", {"sb-1": _record("sb-1"), "sb-2": _record("sb-2", "other")})
    catalog.report("n2", {"sb-3": _record("sb-3"), "sb-4": _record("sb-4", state="hibernated")})
    placed = catalog.locate("sb-3")
    assert placed is not None and (placed.node, placed.tenant) == ("n2", "acme")
    assert catalog.usage("acme") == Usage(2, 2, 512)  # the hibernated one holds nothing
    assert {n.name: n.placed.sandboxes for n in catalog.nodes()} == {"n1": 2, "n2": 1}
    assert [r["id"] for r in catalog.sandboxes_on(["n1", "n2"], "acme")] == ["sb-1", "sb-3", "sb-4"]
    catalog.report("n1", {}, ["sb-2"])
    assert catalog.locate("sb-2") is None and catalog.locate("sb-1") is not None
    catalog.report("n1", {"sb-5": _record("sb-5")}, complete=True)
    assert catalog.locate("sb-1") is None and catalog.locate("sb-5") is not None
    assert catalog.locate("sb-3") is not None  # another node's: untouched


def test_placements_in_flight_count_until_their_sandbox_is_reported(
    catalog: Catalog, catalog_url: str
) -> None:
    """A reservation counts on its node beside the reported sandboxes, as every gateway
    reads it, until the node reports a new sandbox (never twice) or it is released; one
    older than the TTL counts no more and is swept by the next reservation."""
    catalog.register("n1", "http://a", CAPACITY)
    catalog.register("n2", "http://b", CAPACITY)
    catalog.report("n1", {"sb-1": _record("sb-1")})
    first = catalog.reserve("n1", Usage(1, 2, 512))
    second = catalog.reserve("n1", Usage(3, 3, 768))
    other = Catalog(catalog.url, migrate_schema=False)
    try:
        assert {n.name: n.placed for n in other.nodes()} == {
            "n1": Usage(5, 6, 1536),
            "n2": Usage(0, 0, 0),
        }
        other.release(first)
        assert catalog.node("n1").placed == Usage(4, 4, 1024)  # type: ignore[union-attr]
    finally:
        other.close()
    third = catalog.reserve("n1", Usage(1, 1, 256))
    catalog.report("n1", {"sb-1": _record("sb-1", state="paused")})  # not new: no change
    assert catalog.node("n1").placed == Usage(5, 5, 1280)  # type: ignore[union-attr]
    catalog.report("n1", {"sb-2": _record("sb-2")})  # takes the oldest one's place
    assert catalog.node("n1").placed == Usage(5, 5, 1280)  # type: ignore[union-attr]
    catalog.release(second)  # one of its three is gone already
    assert catalog.node("n1").placed == Usage(3, 3, 768)  # type: ignore[union-attr]
    with psycopg.connect(catalog_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE reservations SET made_at = now() - %s * interval '1s' WHERE id = ANY(%s)",
            (RESERVATION_TTL_S + 1, third),
        )
        assert catalog.node("n1").placed == Usage(2, 2, 512)  # type: ignore[union-attr]
        catalog.release(catalog.reserve("n2", Usage(1, 1, 256)))
        left = conn.execute("SELECT count(*) FROM reservations").fetchone()
    assert left == (0,)


def test_snapshots_and_images_may_be_on_several_nodes(catalog: Catalog) -> None:
    """A copied snapshot has a holder per node; a node's report replaces only its own."""
    catalog.register("n1", "http://a", CAPACITY)
    catalog.register("n2", "http://b", CAPACITY)
    catalog.report_snapshots("n1", {"snap-1": _snap("snap-1", size=10)})
    catalog.report_snapshots(
        "n2", {"snap-1": _snap("snap-1", size=10), "snap-2": _snap("snap-2", size=5)}
    )
    assert catalog.snapshot_holders("snap-1") == [("n1", "acme"), ("n2", "acme")]
    catalog.report_snapshots("n2", {"snap-2": _snap("snap-2", size=5)})
    assert catalog.snapshot_holders("snap-1") == [("n1", "acme")]
    catalog.report_images("n1", ["default"])
    catalog.report_images("n2", ["default", "mine"])
    assert sorted(catalog.image_holders("default")) == ["n1", "n2"]
    assert catalog.image_holders("mine") == ["n2"]


def test_cluster_tenants_behave_as_a_machines(catalog: Catalog) -> None:
    """Keys, names, revocation seen by another gateway, quotas over the defaults: as the
    SQLite catalog does, through the same interface."""
    gateway = ClusterTenants(catalog, {"max_sandboxes": 5})
    other = ClusterTenants(Catalog(catalog.url, migrate_schema=False))
    assert gateway.ensure_admin() is not None and gateway.ensure_admin() is None
    record, key = gateway.create_key("acme", "ci")
    assert record.created_at <= datetime.now(UTC)
    assert other.lookup(key) == Caller("acme", "ci") and other.lookup(key + "x") is None
    with pytest.raises(Conflict):
        gateway.create_key("acme", "ci")
    with pytest.raises(InvalidArgument):
        gateway.create_key("Not A Tenant", "ci")
    assert gateway.quota("acme") == Quota(max_sandboxes=5)
    gateway.set_quota("acme", max_vcpus=4)
    gateway.set_quota("acme", max_sandboxes=None)
    assert other.quota("acme") == Quota(max_sandboxes=None, max_vcpus=4)
    assert {t.name: t.keys for t in other.tenants()} == {"acme": 1, "default": 1}
    other.revoke("ci", "acme")
    assert gateway.lookup(key) is None
    assert [k.name for k in gateway.keys("acme", revoked=True)] == ["ci"]
    with pytest.raises(NotFound):
        gateway.revoke("ci", "acme")
    other.catalog.close()


def test_snapshot_records_are_listed_once_per_snapshot(catalog: Catalog) -> None:
    """What a console draws of other nodes' snapshots: each one the tenant sees once,
    however many nodes hold a copy; not templates, a hibernated sandbox's (internal) or
    another tenant's."""
    catalog.register("n1", "http://a", CAPACITY)
    catalog.register("n2", "http://b", CAPACITY)
    held = ["snap-1", "snap-t", "snap-h", "snap-o"]
    kinds = [{}, {"template": True}, {"hibernation": True}, {"tenant": "other"}]
    catalog.report_snapshots("n1", {i: _snap(i, **k) for i, k in zip(held, kinds, strict=True)})
    catalog.report_snapshots("n2", {i: _snap(i) for i in ("snap-1", "snap-2")})
    assert [r["id"] for r in catalog.snapshots_on(["n1", "n2"], "acme")] == ["snap-1", "snap-2"]
    assert [r["id"] for r in catalog.snapshots_on(["n1"], "acme")] == ["snap-1"]
    everyone = catalog.snapshots_on(["n1", "n2"], None)
    assert [r["id"] for r in everyone] == ["snap-1", "snap-2", "snap-o"]
    record = catalog.snapshot_record("snap-2")
    assert record is not None and record["memory_mib"] == 256
    assert catalog.snapshot_record("snap-x") is None


def test_owners_templates_and_moves_are_recorded(catalog: Catalog) -> None:
    """Images carry their tenant (none: a built-in), snapshots whether they are templates,
    and a sandbox reported by another node than before is listed as moved."""
    catalog.register("n1", "http://a", CAPACITY)
    catalog.register("n2", "http://b", CAPACITY)
    catalog.report_images("n1", ["default", "mine"], {"mine": "acme"})
    assert catalog.image_copies("mine") == [("n1", "acme")]
    assert catalog.image_copies("default") == [("n1", None)]
    catalog.report_snapshots(
        "n1", {"snap-t": _snap("snap-t", "default", template=True), "snap-u": _snap("snap-u")}
    )
    assert catalog.snapshot_copies("snap-t") == [("n1", "default", True)]
    assert catalog.snapshot_copies("snap-u") == [("n1", "acme", False)]
    since = catalog.now()
    catalog.report("n1", {"sb-1": _record("sb-1")})
    catalog.report("n1", {"sb-1": _record("sb-1", state="hibernated")})
    assert catalog.moved_since(since) == ([], since)
    catalog.report("n2", {"sb-1": _record("sb-1")})
    moved, after = catalog.moved_since(since)
    assert moved == ["sb-1"] and after > since
    assert catalog.moved_since(after) == ([], after)
    placed = catalog.locate("sb-1")
    assert placed is not None and placed.node == "n2"


def test_console_logins_are_shared_by_every_gateway(catalog: Catalog) -> None:
    """A console login issued by one process is checked by another on the same catalog,
    with the same refusals as one server's (unknown, revoked, expired), and the catalog
    holds the token's digest, never the token."""
    now = [1000.0]
    one = SharedLogins(lambda: now[0], table=GrantTable(catalog))
    other = SharedLogins(lambda: now[0], table=GrantTable(catalog))
    token, grant = one.issue("", "console", ttl_s=60, subject="key-digest")
    assert other.check(token, "", "console") == grant
    assert token not in str(catalog.rows("SELECT * FROM browser_grants"))
    with pytest.raises(AuthenticationError, match="unknown"):
        other.check(token + "x", "", "console")
    other.revoke_token(token)
    with pytest.raises(AuthenticationError, match="revoked"):
        one.check(token, "", "console")
    later, _ = one.issue("", "console", ttl_s=60)
    now[0] += 61
    with pytest.raises(AuthenticationError, match="expired"):
        other.check(later, "", "console")
    now[0] += KEEP_ENDED_S
    one.issue("", "console", ttl_s=60)  # an issue forgets what ended long ago
    assert len(catalog.rows("SELECT digest FROM browser_grants")) == 1

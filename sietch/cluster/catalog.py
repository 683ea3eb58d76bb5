"""The cluster's catalog in PostgreSQL: nodes, and which node holds which sandbox,
snapshot and image (tenants and keys: :mod:`.tenants`, on the same database).

Writes per sandbox lifecycle (see bench/README.md): one row written when its node
reports it (create), one per state change the node reports (pause, hibernate, ...),
one delete; a node's heartbeat is one UPDATE of its own row. A gateway writes a
reservation per placement (an INSERT as it places), which the node's report of the new
sandbox deletes in its own transaction (the gateway's DELETE once the node answered
finds it gone, unless the create failed); it also marks silent nodes unreachable, and
otherwise only reads.

A pool of connections per process (``psycopg_pool``), in autocommit: every call is one
statement or one short transaction on a connection of its own, so a gateway's concurrent
requests never queue behind each other's queries, and PostgreSQL, not this process,
orders writes between nodes and gateways. A broken connection is dropped by the pool and
replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from sietch.cluster import migrate
from sietch.core.quotas import Usage
from sietch.errors import Unavailable

log = logging.getLogger(__name__)

HELD = ("creating", "running", "paused")
"""Sandbox states that hold a node's memory and CPU (and count against quotas)."""
RESERVATION_TTL_S = 600
"""A placement in flight counts this long at most: longer than any create takes, short
enough that one left by a gateway that died mid-create does not skew placement for long."""


@dataclass(frozen=True)
class Capacity:
    """What a node has and what of it is free, measured by the node at its heartbeat."""

    vcpus: int
    memory_mib: int
    disk_mib: int
    max_sandboxes: int
    free_memory_mib: int
    free_disk_mib: int
    load: float
    """The 1-minute load average."""
    sandboxes: int
    accelerator: str
    qemu_version: str


@dataclass(frozen=True)
class NodeRecord:
    name: str
    url: str
    capacity: Capacity
    last_heartbeat: datetime
    reachable: bool
    """Heartbeat within ``node_timeout_s``; otherwise its sandboxes are ``lost``."""
    placed: Usage
    """What the catalog's sandboxes on it hold (up to date at every create, unlike the
    heartbeat's measured figures)."""


@dataclass(frozen=True)
class Placement:
    """Where a sandbox is: its node (and how to reach it), its owner, and the record its
    node last reported."""

    node: str
    tenant: str
    record: dict[str, Any]
    url: str
    reachable: bool


_CAPACITY = (
    "vcpus, memory_mib, disk_mib, max_sandboxes, free_memory_mib, free_disk_mib, load, "
    "sandboxes, accelerator, qemu_version"
)


class Catalog:
    """The catalog at ``url`` (``postgresql://...``); ``migrate``: upgrade its schema first;
    at most ``connections`` connections at once."""

    def __init__(
        self,
        url: str,
        *,
        node_timeout_s: float = 10.0,
        migrate_schema: bool = True,
        connections: int = 8,
    ):
        self.url = url
        self.node_timeout_s = node_timeout_s
        if migrate_schema:
            migrate.upgrade(url)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=connections,
            kwargs={"autocommit": True, "connect_timeout": 5},
            timeout=10,
            name="sietch-catalog",
            open=False,
        )
        self._pool.open(wait=False)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def cursor(self, *, transaction: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor on a pooled connection (in one transaction if asked); an unreachable
        catalog is :class:`Unavailable` (503)."""
        try:
            with self._pool.connection() as conn:
                if transaction:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    with conn.cursor() as cur:
                        yield cur
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise Unavailable(f"the cluster catalog is unreachable: {exc}") from exc

    def rows(self, query: str, args: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self.cursor() as cur:
            cur.execute(query, args)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    # -- nodes ------------------------------------------------------------------------

    def register(self, name: str, url: str, capacity: Capacity) -> None:
        """Add the node or refresh its row (a restarted node: same name, maybe a new URL)."""
        values = _capacity_values(capacity)
        self.rows(
            f"INSERT INTO nodes (name, url, {_CAPACITY}, registered_at, last_heartbeat, state) "
            f"VALUES (%s, %s, {', '.join(['%s'] * len(values))}, now(), now(), 'up') "
            "ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _CAPACITY.split(", "))
            + ", registered_at = now(), last_heartbeat = now(), state = 'up'",
            (name, url, *values),
        )

    def heartbeat(self, name: str, capacity: Capacity) -> bool:
        """One UPDATE of the node's row; False if it has none (removed: register again)."""
        sets = ", ".join(f"{c} = %s" for c in _CAPACITY.split(", "))
        with self.cursor() as cur:
            cur.execute(
                f"UPDATE nodes SET {sets}, last_heartbeat = now(), state = 'up' WHERE name = %s",
                (*_capacity_values(capacity), name),
            )
            return cur.rowcount == 1

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, reachable or not, with what its sandboxes and the
        placements in flight to it hold."""
        held = (
            "SELECT node, count(*) AS n, sum(vcpus) AS v, sum(memory_mib) AS m FROM sandboxes "
            "WHERE state = ANY(%s) GROUP BY node"
        )
        reserved = (
            "SELECT node, count(*) AS n, sum(vcpus) AS v, sum(memory_mib) AS m "
            "FROM reservations WHERE made_at > now() - %s * interval '1s' GROUP BY node"
        )
        rows = self.rows(
            f"SELECT n.name, n.url, {', '.join('n.' + c for c in _CAPACITY.split(', '))}, "
            "n.last_heartbeat, n.state = 'up' AND n.last_heartbeat > now() - %s * interval '1s', "
            + ", ".join(f"coalesce(h.{c}, 0) + coalesce(r.{c}, 0)" for c in "nvm")
            + f" FROM nodes n LEFT JOIN ({held}) h ON h.node = n.name "
            f"LEFT JOIN ({reserved}) r ON r.node = n.name ORDER BY n.name",
            (self.node_timeout_s, list(HELD), RESERVATION_TTL_S),
        )
        return [
            NodeRecord(
                r[0], r[1], Capacity(*r[2:12]), r[12], r[13], Usage(*(int(x) for x in r[14:17]))
            )
            for r in rows
        ]

    def node(self, name: str) -> NodeRecord | None:
        return next((n for n in self.nodes() if n.name == name), None)

    def mark_unreachable(self) -> list[str]:
        """Record the silent nodes as unreachable; the names that were up until now."""
        rows = self.rows(
            "UPDATE nodes SET state = 'unreachable' WHERE state = 'up' "
            "AND last_heartbeat <= now() - %s * interval '1s' RETURNING name",
            (self.node_timeout_s,),
        )
        return [r[0] for r in rows]

    # -- placements in flight ---------------------------------------------------------

    def reserve(self, node: str, need: Usage) -> list[int]:
        """Count ``need`` on ``node``, a row per sandbox, each until the node reports a
        sandbox new to it, or :meth:`release`, or ``RESERVATION_TTL_S`` (its gateway died
        first); the rows' ids. Stale ones go in the same trip."""
        each = max(need.sandboxes, 1)
        with self.cursor(transaction=True) as cur:
            cur.execute(
                "DELETE FROM reservations WHERE made_at <= now() - %s * interval '1s'",
                (RESERVATION_TTL_S,),
            )
            cur.execute(
                "INSERT INTO reservations (node, vcpus, memory_mib) "
                "SELECT %s, %s, %s FROM generate_series(1, %s) RETURNING id",
                (node, need.vcpus // each, need.memory_mib // each, each),
            )
            return [int(r[0]) for r in cur.fetchall()]

    def release(self, reservations: Sequence[int]) -> None:
        self.rows("DELETE FROM reservations WHERE id = ANY(%s)", (list(reservations),))

    # -- what each node holds ---------------------------------------------------------

    def report(
        self,
        node: str,
        sandboxes: Mapping[str, dict[str, Any]],
        gone: Sequence[str] = (),
        *,
        complete: bool = False,
    ) -> None:
        """The node's sandboxes that are new or changed (their records) and the ids it no
        longer holds; ``complete``: ``sandboxes`` is all it holds (a start: drop the rest)."""
        with self.cursor(transaction=True) as cur:
            if complete:
                cur.execute(
                    "DELETE FROM sandboxes WHERE node = %s AND NOT id = ANY(%s)",
                    (node, list(sandboxes)),
                )
            elif gone:
                cur.execute(
                    "DELETE FROM sandboxes WHERE node = %s AND id = ANY(%s)", (node, list(gone))
                )
            if sandboxes:
                _take_over_reservations(
                    cur, node, [i for i, r in sandboxes.items() if r["state"] in HELD]
                )
                cur.executemany(
                    "INSERT INTO sandboxes (id, node, tenant, state, vcpus, memory_mib, record) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    "moved_at = CASE WHEN sandboxes.node = EXCLUDED.node "
                    "THEN sandboxes.moved_at ELSE now() END, "
                    "node = EXCLUDED.node, tenant = EXCLUDED.tenant, state = EXCLUDED.state, "
                    "vcpus = EXCLUDED.vcpus, memory_mib = EXCLUDED.memory_mib, "
                    "record = EXCLUDED.record",
                    [
                        (i, node, r["tenant"], r["state"], r["vcpus"], r["memory_mib"], Jsonb(r))
                        for i, r in sandboxes.items()
                    ],
                )

    def report_snapshots(self, node: str, snapshots: Mapping[str, Mapping[str, Any]]) -> None:
        """All the snapshots the node holds now: id -> its public record (``tenant``,
        ``size_bytes``, ``template``: every tenant may restore a template)."""
        with self.cursor(transaction=True) as cur:
            cur.execute(
                "DELETE FROM snapshots WHERE node = %s AND NOT id = ANY(%s)",
                (node, list(snapshots)),
            )
            if snapshots:
                cur.executemany(
                    "INSERT INTO snapshots (id, node, tenant, size_bytes, template, record) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id, node) DO UPDATE SET "
                    "size_bytes = EXCLUDED.size_bytes, template = EXCLUDED.template, "
                    "record = EXCLUDED.record",
                    [
                        (i, node, r["tenant"], r["size_bytes"], r["template"], Jsonb(dict(r)))
                        for i, r in snapshots.items()
                    ],
                )

    def report_images(
        self, node: str, images: Sequence[str], owners: Mapping[str, str] | None = None
    ) -> None:
        """All the images the node holds now; ``owners``: the tenant of each user image
        (the rest are built-in, everyone's)."""
        owners = owners or {}
        with self.cursor(transaction=True) as cur:
            cur.execute(
                "DELETE FROM images WHERE node = %s AND NOT name = ANY(%s)", (node, list(images))
            )
            cur.executemany(
                "INSERT INTO images (name, node, tenant) VALUES (%s, %s, %s) "
                "ON CONFLICT (name, node) DO UPDATE SET tenant = EXCLUDED.tenant",
                [(name, node, owners.get(name)) for name in images],
            )

    def now(self) -> datetime:
        """The catalog's clock (what :meth:`moved_since` compares with)."""
        now: datetime = self.rows("SELECT now()")[0][0]
        return now

    def moved_since(self, since: datetime) -> tuple[list[str], datetime]:
        """The sandboxes that moved to another node after ``since``, and the time to ask
        from next."""
        rows = self.rows(
            "SELECT id, moved_at FROM sandboxes WHERE moved_at > %s ORDER BY moved_at", (since,)
        )
        return [r[0] for r in rows], rows[-1][1] if rows else since

    def locate(self, sandbox_id: str) -> Placement | None:
        """Where the sandbox is (one query: what a gateway asks on every request)."""
        return self._placement("s.id = %s", sandbox_id)

    def find_labelled(self, key: str, value: str, tenant: str | None) -> Placement | None:
        """The sandbox of ``tenant`` (None: any) carrying label ``key=value``."""
        return self._placement(
            "s.record -> 'labels' ->> %s = %s AND (%s::text IS NULL OR s.tenant = %s)",
            key,
            value,
            tenant,
            tenant,
        )

    def _placement(self, where: str, *args: Any) -> Placement | None:
        rows = self.rows(
            "SELECT s.node, s.tenant, s.record, n.url, n.state = 'up' AND n.last_heartbeat > "
            f"now() - %s * interval '1s' FROM sandboxes s JOIN nodes n ON n.name = s.node "
            f"WHERE {where} LIMIT 1",
            (self.node_timeout_s, *args),
        )
        return Placement(*rows[0]) if rows else None

    def snapshot_holders(self, snapshot_id: str) -> list[tuple[str, str]]:
        """The nodes holding the snapshot, with its tenant: ``[(node, tenant), ...]``."""
        return [(node, tenant) for node, tenant, _ in self.snapshot_copies(snapshot_id)]

    def snapshot_copies(self, snapshot_id: str) -> list[tuple[str, str, bool]]:
        """``[(node, tenant, is a template), ...]`` for the snapshot, by node."""
        return [
            (r[0], r[1], r[2])
            for r in self.rows(
                "SELECT node, tenant, template FROM snapshots WHERE id = %s ORDER BY node",
                (snapshot_id,),
            )
        ]

    def snapshot_record(self, snapshot_id: str) -> dict[str, Any] | None:
        """The snapshot's record as a node holding it last reported it."""
        rows = self.rows(
            "SELECT record FROM snapshots WHERE id = %s AND record IS NOT NULL LIMIT 1",
            (snapshot_id,),
        )
        return rows[0][0] if rows else None

    def snapshots_on(self, nodes: Sequence[str], tenant: str | None) -> list[dict[str, Any]]:
        """The records of the snapshots on ``nodes`` that ``tenant`` sees (None: all), one per
        snapshot however many of them hold a copy; not templates, nor a hibernated
        sandbox's (internal), as a node's own listing."""
        rows = self.rows(
            "SELECT DISTINCT ON (id) record FROM snapshots WHERE node = ANY(%s) "
            "AND record IS NOT NULL AND NOT template "
            "AND NOT coalesce((record ->> 'hibernation')::boolean, false) "
            "AND (%s::text IS NULL OR tenant = %s) ORDER BY id, node",
            (list(nodes), tenant, tenant),
        )
        return [r[0] for r in rows]

    def image_holders(self, name: str) -> list[str]:
        return [node for node, _ in self.image_copies(name)]

    def image_copies(self, name: str) -> list[tuple[str, str | None]]:
        """``[(node, tenant), ...]`` holding image ``name`` (tenant None: a built-in)."""
        return [
            (r[0], r[1])
            for r in self.rows(
                "SELECT node, tenant FROM images WHERE name = %s ORDER BY node", (name,)
            )
        ]

    def sandboxes_on(
        self, nodes: Sequence[str], tenant: str | None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The last records of the sandboxes on ``nodes`` that ``tenant`` sees (None: all),
        carrying every label of ``labels``."""
        rows = self.rows(
            "SELECT record FROM sandboxes WHERE node = ANY(%s) "
            "AND (%s::text IS NULL OR tenant = %s) AND coalesce(record -> 'labels', '{}') @> %s "
            "ORDER BY id",
            (list(nodes), tenant, tenant, Jsonb(dict(labels or {}))),
        )
        return [r[0] for r in rows]

    def usage(self, tenant: str) -> Usage:
        """What the tenant's sandboxes hold over the whole cluster (those on unreachable
        nodes too: they come back with their node)."""
        row = self.rows(
            "SELECT count(*), coalesce(sum(vcpus), 0), coalesce(sum(memory_mib), 0) "
            "FROM sandboxes WHERE tenant = %s AND state = ANY(%s)",
            (tenant, list(HELD)),
        )[0]
        return Usage(*row)


def _take_over_reservations(cur: psycopg.Cursor[Any], node: str, held: list[str]) -> None:
    """Each of ``held`` (reported sandboxes that hold room) that is new on ``node`` takes a
    placement in flight to it (oldest first): it counts as its row from now on, not twice.
    Before the report's upsert, in its transaction."""
    if not held:
        return
    cur.execute("SELECT count(*) FROM sandboxes WHERE node = %s AND id = ANY(%s)", (node, held))
    row = cur.fetchone()
    if arrived := len(held) - (row[0] if row else 0):
        cur.execute(
            "DELETE FROM reservations WHERE id IN (SELECT id FROM reservations "
            "WHERE node = %s ORDER BY id LIMIT %s)",
            (node, arrived),
        )


def _capacity_values(capacity: Capacity) -> tuple[Any, ...]:
    return tuple(getattr(capacity, c) for c in _CAPACITY.split(", "))

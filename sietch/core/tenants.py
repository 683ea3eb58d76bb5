"""Tenants and their API keys, in one SQLite file of the state dir (``tenants.db``).

A key has a name and belongs to a tenant; an admin key sees every tenant's
sandboxes. Keys are long random tokens stored only as SHA-256 digests (nothing
short enough to brute-force is ever hashed, so no salt is needed).
``sietch keys`` and ``sietch tenants`` change the file while the server runs: the
server's :meth:`Tenants.lookup` asks SQLite's ``PRAGMA data_version`` (a counter
that moves when another connection commits) on every request and reloads its
cached keys when it moved, so a revoked key is refused from the next request on.

Before tenants, a server kept one flat file of key digests (``api_keys``):
:meth:`Tenants.import_legacy` makes each of those an admin key of the
``default`` tenant, once, so single-key installs keep working.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from sietch._util import transaction
from sietch.core.models import DEFAULT_TENANT
from sietch.core.quotas import Quota
from sietch.errors import Conflict, InvalidArgument, NotFound, describe_validation

KEY_PREFIX = "sk-sietch-"
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_LEGACY_DONE = "legacy_keys_imported"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name       TEXT PRIMARY KEY,
    quota      TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL REFERENCES tenants (name),
    name       TEXT NOT NULL,
    admin      INTEGER NOT NULL DEFAULT 0,
    digest     TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name
    ON api_keys (tenant, name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a tenant, the key's name, and whether it is an admin."""

    tenant: str
    key: str
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The tenant whose resources it may see; None: every tenant's (an admin)."""
        return None if self.admin else self.tenant


ANONYMOUS = Caller(DEFAULT_TENANT, "", admin=True)
"""Every request when authentication is off (loopback only): an admin of ``default``."""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    tenant: str
    name: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = None

    def caller(self) -> Caller:
        return Caller(self.tenant, self.name, self.admin)


@dataclass(frozen=True)
class TenantRecord:
    name: str
    quota: Quota
    """Its own limits only (those ``set_quota`` was given): the rest are the defaults."""
    created_at: datetime
    keys: int
    """Keys not revoked."""


def check_tenant_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"a tenant name is 1-63 of a-z, 0-9, '_', '.', '-' (starting alphanumeric), "
            f"not {name!r}"
        )
    return name


class TenantStore(ABC):
    """What the server asks of tenants and keys, wherever they are kept: this machine's
    SQLite (:class:`Tenants`) or a cluster's catalog (``sietch.cluster.tenants``). The
    parts that do no I/O live here, shared.

    ``defaults`` are the limits of every tenant (``SIETCH_TENANT_QUOTA``); a tenant's
    own, set by :meth:`set_quota`, replace them limit by limit.
    """

    def __init__(self, defaults: Mapping[str, object] | None = None) -> None:
        try:
            self._defaults = Quota.model_validate(defaults or {}).model_dump(exclude_unset=True)
        except ValidationError as exc:
            raise InvalidArgument(
                "SIETCH_TENANT_QUOTA: " + describe_validation(exc.errors())
            ) from None

    def _effective(self, own: Mapping[str, object]) -> Quota:
        return Quota.model_validate({**self._defaults, **own})

    @abstractmethod
    def close(self) -> None: ...

    def lookup(self, key: str) -> Caller | None:
        """The caller a key stands for; None if it is unknown or revoked."""
        # A lookup by digest: its timing tells nothing that helps to forge a key.
        return self.lookup_digest(digest(key))

    @abstractmethod
    def lookup_digest(self, key_digest: str) -> Caller | None:
        """As :meth:`lookup`, by the key's :func:`digest`: for a session that must end when
        its key is revoked, without keeping the key itself (the web console's login)."""

    @abstractmethod
    def quota(self, tenant: str) -> Quota:
        """The tenant's quota: its own limits over the defaults (unlimited without either)."""

    @abstractmethod
    def has_keys(self) -> bool: ...

    @abstractmethod
    def _add_key(self, record: KeyRecord, key_digest: str) -> None:
        """Store the key (its tenant made if new); Conflict if the tenant has that name."""

    @abstractmethod
    def keys(self, tenant: str | None = None, *, revoked: bool = False) -> list[KeyRecord]: ...

    @abstractmethod
    def _revoke(self, key_id: str) -> None: ...

    @abstractmethod
    def set_quota(self, tenant: str, **limits: object) -> Quota:
        """Change some of a tenant's own limits (made if new): None makes one unlimited,
        whatever the defaults say. Returns its own limits (pydantic's ValidationError for a
        bad one)."""

    @abstractmethod
    def tenants(self) -> list[TenantRecord]: ...

    @abstractmethod
    def import_legacy(self, path: Path) -> int:
        """Make each digest of a pre-tenant ``api_keys`` file an admin key of ``default``,
        once (a key revoked later is not brought back); returns how many were imported."""

    def create_key(self, tenant: str, name: str, *, admin: bool = False) -> tuple[KeyRecord, str]:
        """A new key (its tenant made if new); returns its record and the key, seen only now."""
        if not _KEY_NAME.fullmatch(name):
            raise InvalidArgument(
                f"a key name is 1-64 of A-Z, a-z, 0-9, '_', '.', '@', '-', not {name!r}"
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(new_key_id(), tenant, name, admin, datetime.now(UTC))
        self._add_key(record, digest(key))
        return record, key

    def revoke(self, key: str, tenant: str | None = None) -> KeyRecord:
        """Revoke a key by id, or by name (within ``tenant`` when names repeat across tenants)."""
        matches = [
            k
            for k in self.keys(tenant)
            if key in (k.id, k.name) and (tenant is None or k.tenant == tenant)
        ]
        if not matches:
            raise NotFound(f"no live key {key!r}" + (f" in tenant {tenant!r}" if tenant else ""))
        if len(matches) > 1:
            raise Conflict(
                f"{len(matches)} keys are named {key!r} (tenants "
                f"{', '.join(k.tenant for k in matches)}): name the tenant or use the key's id"
            )
        self._revoke(matches[0].id)
        return matches[0]

    def ensure_admin(self) -> str | None:
        """With no live key at all, make an admin key of ``default``; returns it if made."""
        if self.has_keys():
            return None
        return self.create_key(DEFAULT_TENANT, "admin", admin=True)[1]


def new_key_id() -> str:
    return "key-" + secrets.token_hex(4)


def name_taken(tenant: str, name: str) -> Conflict:
    return Conflict(f"tenant {tenant!r} already has a key named {name!r}")


class Tenants(TenantStore):
    """The catalog of tenants and keys in SQLite; safe to open from several processes."""

    def __init__(self, path: Path, defaults: Mapping[str, object] | None = None) -> None:
        super().__init__(defaults)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 before SQLite opens it; its -wal and -shm files copy the mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._version: int | None = None
        self._keys: dict[str, KeyRecord] = {}
        self._quotas: dict[str, Quota] = {}

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with transaction(self._db, self._lock) as db:
            yield db
        self._version = None  # our own commits don't move data_version

    # -- what the server asks on every request -------------------------------------

    def _fresh(self) -> None:
        """Reload the cache when any connection (another process too) has committed."""
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            rows = self._db.execute(
                "SELECT id, tenant, name, admin, created_at, digest FROM api_keys "
                "WHERE revoked_at IS NULL"
            ).fetchall()
            quotas = self._db.execute("SELECT name, quota FROM tenants").fetchall()
            self._version = version
        self._keys = {
            row[5]: KeyRecord(row[0], row[1], row[2], bool(row[3]), _time(row[4])) for row in rows
        }
        self._quotas = {name: self._effective(json.loads(q)) for name, q in quotas}

    def lookup_digest(self, key_digest: str) -> Caller | None:
        self._fresh()
        found = self._keys.get(key_digest)
        return None if found is None else found.caller()

    def quota(self, tenant: str) -> Quota:
        self._fresh()
        return self._quotas.get(tenant) or self._effective({})

    def has_keys(self) -> bool:
        self._fresh()
        return bool(self._keys)

    # -- what ``sietch keys`` and ``sietch tenants`` do -----------------------------

    def _ensure_tenant(self, db: sqlite3.Connection, tenant: str) -> None:
        db.execute(
            "INSERT OR IGNORE INTO tenants (name, created_at) VALUES (?, ?)",
            (check_tenant_name(tenant), _now()),
        )

    def _add_key(self, record: KeyRecord, key_digest: str) -> None:
        try:
            with self._tx() as db:
                self._ensure_tenant(db, record.tenant)
                self._insert_key(db, record, key_digest)
        except sqlite3.IntegrityError:
            raise name_taken(record.tenant, record.name) from None

    @staticmethod
    def _insert_key(db: sqlite3.Connection, record: KeyRecord, key_digest: str) -> None:
        db.execute(
            "INSERT INTO api_keys (id, tenant, name, admin, digest, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.id,
                record.tenant,
                record.name,
                int(record.admin),
                key_digest,
                record.created_at.isoformat(),
            ),
        )

    def keys(self, tenant: str | None = None, *, revoked: bool = False) -> list[KeyRecord]:
        query = "SELECT id, tenant, name, admin, created_at, revoked_at FROM api_keys"
        where, args = [], []
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if not revoked:
            where.append("revoked_at IS NULL")
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY tenant, created_at", args).fetchall()
        return [
            KeyRecord(r[0], r[1], r[2], bool(r[3]), _time(r[4]), _time(r[5]) if r[5] else None)
            for r in rows
        ]

    def _revoke(self, key_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_now(), key_id))

    def set_quota(self, tenant: str, **limits: object) -> Quota:
        with self._tx() as db:
            self._ensure_tenant(db, tenant)
            row = db.execute("SELECT quota FROM tenants WHERE name = ?", (tenant,)).fetchone()
            own = Quota.model_validate({**json.loads(row[0]), **limits})
            db.execute(
                "UPDATE tenants SET quota = ? WHERE name = ?",
                (own.model_dump_json(exclude_unset=True), tenant),
            )
        return own

    def tenants(self) -> list[TenantRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT t.name, t.quota, t.created_at, COUNT(k.id) FROM tenants t "
                "LEFT JOIN api_keys k ON k.tenant = t.name AND k.revoked_at IS NULL "
                "GROUP BY t.name ORDER BY t.name"
            ).fetchall()
        return [
            TenantRecord(r[0], Quota.model_validate_json(r[1]), _time(r[2]), r[3]) for r in rows
        ]

    # -- first start ---------------------------------------------------------------

    def import_legacy(self, path: Path) -> int:
        with self._lock:
            done = self._db.execute("SELECT 1 FROM meta WHERE key = ?", (_LEGACY_DONE,)).fetchone()
        if done:
            return 0
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        digests = [ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#")]
        with self._tx() as db:
            self._ensure_tenant(db, DEFAULT_TENANT)
            for n, key_digest in enumerate(digests, 1):
                name = "legacy" if n == 1 else f"legacy-{n}"
                record = KeyRecord(new_key_id(), DEFAULT_TENANT, name, True, datetime.now(UTC))
                self._insert_key(db, record, key_digest)
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_LEGACY_DONE, str(path)))
        return len(digests)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)

"""``sietch keys`` and ``sietch tenants``: API keys, tenants and quotas, on the server's machine.

These are local admin commands: they change the server's ``tenants.db`` in its
state dir directly (the server may be running; it sees a change at its next
request), so they need the server extra and access to that directory, and no key.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import BaseModel, ValidationError

from sietch.cli._common import (
    JsonOption,
    api_errors,
    err,
    fail,
    listing_table,
    out,
    print_json,
    server_side,
)
from sietch.errors import describe_validation

if TYPE_CHECKING:
    from sietch.core.tenants import TenantStore

keys_app = typer.Typer(help="API keys (local admin: changes the server's state dir).")
tenants_app = typer.Typer(help="Tenants and their quotas (local admin: the server's state dir).")

StateDirOption = Annotated[
    Path | None,
    typer.Option(help="The server's state dir [default: SIETCH_STATE_DIR or the default]."),
]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="The tenant.")]
UNLIMITED = "unlimited"
LimitOption = Annotated[str | None, typer.Option(help=f"A number, or '{UNLIMITED}'.")]


@contextmanager
def catalog(state_dir: Path | None) -> Iterator[TenantStore]:
    """The server's tenants catalog (a cluster's, with SIETCH_ROLE and SIETCH_CATALOG_URL
    set as for its gateways); errors are one red line."""
    with server_side("sietch keys"):
        from sietch.config import Settings
        from sietch.core.tenants import Tenants

    try:
        settings = Settings(state_dir=state_dir) if state_dir else Settings()
    except ValidationError as exc:
        fail(describe_validation(exc.errors()), 2)
    with api_errors():
        if settings.role != "standalone" and settings.catalog_url:
            from sietch.cluster.catalog import Catalog
            from sietch.cluster.tenants import ClusterTenants

            shared = Catalog(settings.catalog_url)
            tenants: TenantStore = ClusterTenants(shared)
        else:
            shared = None
            tenants = Tenants(settings.tenants_path)
    try:
        with api_errors():
            yield tenants
    finally:
        tenants.close()
        if shared is not None:
            shared.close()


@keys_app.command("create")
def create_key(
    tenant: TenantOption = "default",
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for.")] = "key",
    admin: Annotated[bool, typer.Option(help="The key sees and drives every tenant's.")] = False,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a key for a tenant (made if new); the key is printed once, only its hash is kept."""
    with catalog(state_dir) as tenants:
        record, key = tenants.create_key(tenant, name, admin=admin)
    if as_json:
        print_json({"id": record.id, "tenant": tenant, "name": name, "admin": admin, "key": key})
        return
    out.print(key)
    err.print(f"key {record.id} ({name!r}) of tenant {tenant!r}: it is shown only now")


@keys_app.command("ls")
def list_keys(
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Only this tenant's.")
    ] = None,
    revoked: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """The keys (never the keys themselves: only their ids and names are kept in the clear)."""
    with catalog(state_dir) as tenants:
        keys = tenants.keys(tenant, revoked=revoked)
    if as_json:
        print_json([vars(k) for k in keys])
        return
    table = listing_table("ID", "TENANT", "NAME", "ADMIN", "CREATED", "REVOKED")
    for k in keys:
        revoked_at = f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else ""
        table.add_row(
            k.id, k.tenant, k.name, "yes" if k.admin else "", f"{k.created_at:%Y-%m-%d %H:%M}",
            revoked_at,
        )  # fmt: skip
    out.print(table)


@keys_app.command("revoke")
def revoke_key(
    key: Annotated[str, typer.Argument(help="The key's id or name.")],
    tenant: Annotated[
        str | None, typer.Option("--tenant", "-t", help="Where names repeat across tenants.")
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Revoke a key: the server refuses it from its next request on."""
    with catalog(state_dir) as tenants:
        record = tenants.revoke(key, tenant)
    out.print(record.id)


@tenants_app.command("ls")
def list_tenants(state_dir: StateDirOption = None, as_json: JsonOption = False) -> None:
    """Every tenant, its live keys and the limits set for it (others: SIETCH_TENANT_QUOTA's,
    or unlimited)."""
    with catalog(state_dir) as tenants:
        found = tenants.tenants()
    if as_json:
        print_json(
            [
                {"name": t.name, "keys": t.keys, "quota": t.quota.model_dump(exclude_unset=True)}
                for t in found
            ]
        )
        return
    table = listing_table("TENANT", "KEYS", "QUOTA")
    for t in found:
        table.add_row(t.name, str(t.keys), _shown(t.quota))
    out.print(table)


def _limit(value: str | None) -> object:
    return None if value == UNLIMITED else value


def _shown(quota: BaseModel) -> str:
    limits = quota.model_dump(exclude_unset=True)
    return " ".join(f"{k}={UNLIMITED if v is None else v}" for k, v in limits.items())


@tenants_app.command("set")
def set_quota(  # noqa: PLR0917 - typer passes options by name
    tenant: Annotated[str, typer.Argument(help="The tenant (made if new).")],
    max_sandboxes: LimitOption = None,
    max_vcpus: LimitOption = None,
    max_memory_mib: LimitOption = None,
    max_snapshot_disk_mib: LimitOption = None,
    max_image_disk_mib: LimitOption = None,
    create_rate_per_min: LimitOption = None,
    create_burst: Annotated[int | None, typer.Option(help="Creates back to back.")] = None,
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a tenant's quota; limits not named stay as they are. Applies to the next create."""
    given = {
        "max_sandboxes": max_sandboxes,
        "max_vcpus": max_vcpus,
        "max_memory_mib": max_memory_mib,
        "max_snapshot_disk_mib": max_snapshot_disk_mib,
        "max_image_disk_mib": max_image_disk_mib,
        "create_rate_per_min": create_rate_per_min,
    }
    limits: dict[str, object] = {k: _limit(v) for k, v in given.items() if v is not None}
    if create_burst is not None:
        limits["create_burst"] = create_burst
    with catalog(state_dir) as tenants:
        try:
            quota = tenants.set_quota(tenant, **limits)
        except ValidationError as exc:
            fail(describe_validation(exc.errors()), 2)
    if as_json:
        print_json(quota.model_dump(exclude_unset=True))
    else:
        out.print(f"{tenant}: {_shown(quota)}")

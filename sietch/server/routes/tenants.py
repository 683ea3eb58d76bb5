"""The caller's tenant: its quota and what it uses of it (keys are managed locally:
``sietch keys`` and ``sietch tenants`` on the server's machine)."""

from __future__ import annotations

from fastapi import APIRouter

from sietch.config import MiB
from sietch.core import images as user_images
from sietch.server.deps import CallerDep, ManagerDep
from sietch.server.schemas import QuotaPublic, TenantPublic, UsagePublic

router = APIRouter(prefix="/tenant", tags=["tenants"])


@router.get("", name="get", response_model=TenantPublic)
async def get_tenant(caller: CallerDep, manager: ManagerDep) -> TenantPublic:
    """Who the key belongs to, the tenant's quota (null: unlimited) and its use now."""
    tenant = caller.tenant
    used = manager.usage(tenant) + manager.quotas.pending(tenant)
    return TenantPublic(
        name=tenant,
        key=caller.key,
        admin=caller.admin,
        quota=QuotaPublic.model_validate(manager.quotas.quota_of(tenant).model_dump()),
        usage=UsagePublic(
            sandboxes=used.sandboxes,
            vcpus=used.vcpus,
            memory_mib=used.memory_mib,
            snapshot_disk_mib=-(-manager.snapshot_bytes(tenant) // MiB),
            image_disk_mib=-(-user_images.disk_bytes(manager.store, tenant) // MiB),
        ),
    )

"""Health, server info and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sietch import __version__
from sietch.server.deps import CallerDep, ManagerDep, MetricsDep, SettingsDep, StateDep
from sietch.server.schemas import Defaults, Health, Limits, ServerInfo

public_router = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@public_router.get("/health", response_model=Health)
async def health(manager: ManagerDep) -> Health:
    """Liveness: 200 once the manager runs (503 while it starts or stops); needs no key."""
    return Health(status="ok", version=__version__)


@router.get("/info", response_model=ServerInfo)
async def info(
    state: StateDep, settings: SettingsDep, manager: ManagerDep, caller: CallerDep
) -> ServerInfo:
    """Version, the accelerator in use and the limits a client must respect (the caller's
    own quota: ``GET /tenant``)."""
    s = settings
    return ServerInfo(
        version=__version__,
        accel=manager.accel,
        auth=state.auth,
        sandboxes=len(await manager.list(tenant=caller.scope)),
        limits=Limits(
            max_vcpus=s.max_vcpus,
            min_memory_mib=s.min_memory_mib,
            max_memory_mib=s.max_memory_mib,
            max_disk_mib=s.max_disk_mib,
            max_sandboxes=s.max_sandboxes,
            max_request_bytes=s.max_request_bytes,
            max_upload_bytes=s.max_upload_bytes,
            max_exec_output_bytes=s.max_exec_output_bytes,
            create_rate_per_min=s.create_rate_per_min,
            create_burst=s.create_burst,
        ),
        defaults=Defaults(
            image=s.default_image,
            vcpus=s.default_vcpus,
            memory_mib=s.default_memory_mib,
            disk_mib=s.default_disk_mib,
        ),
        cgroups=manager.cgroups_status,
        jail=manager.jail_status,
        memory_reserve_mib=s.memory_reserve_mib,
    )


metrics_router = APIRouter(tags=["system"])


@metrics_router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format: sandboxes by state, create/exec latency, errors."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

"""Arrakis' REST API under ``/v1``, served by Sietch's manager.

Same paths, fields and shapes as Arrakis (``api/server-api.yaml``), so
``py-arrakis`` works with a URL change. Where Arrakis misbehaves Sietch does
the right thing in the same wire format:

- restoring a snapshot while its original VM runs works (Arrakis re-claims the
  original's IP and tap device and fails): every Sietch VM has its own
  user-mode network, so any number of restores run side by side, concurrently;
- a restored VM can be snapshotted again (snapshots chain);
- commands have no 30-second limit (only ``SIETCH_EXEC_TIMEOUT_S``, if set);
- files downloaded by absolute path are read from that path (Arrakis reads
  ``/tmp/server_files/<path>`` even for an absolute path it wrote elsewhere);
- an unknown VM is a 404, not a 500; a taken name or snapshot id is a 409.

Errors keep Sietch's body, ``{"error": {"code", "message"}}``, a superset of
Arrakis' ``{"error": {"message"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from sietch.core import images as user_images
from sietch.core.live import LiveSandbox
from sietch.core.manager import Manager
from sietch.core.models import PortMapping, SandboxInfo, SandboxState
from sietch.core.tenants import Caller
from sietch.errors import InvalidArgument, PayloadTooLarge, SietchError
from sietch.server.arrakis.access import require_key
from sietch.server.arrakis.registry import SNAPSHOT_LABEL, VM_LABEL, Registry, get_registry
from sietch.server.arrakis.schemas import (
    DestroyAllVMsResponse,
    DownloadedFile,
    HealthResponse,
    ListAllVMsResponse,
    PortForward,
    SnapshotRequest,
    StartVMRequest,
    UpdateVMStateRequest,
    VmCommandRequest,
    VmCommandResponse,
    VmFileDownloadResponse,
    VmFileUploadRequest,
    VmFileUploadResponse,
    VMInfo,
    VMResponse,
    VMSnapshotResponse,
)
from sietch.server.deps import ManagerDep, SettingsDep
from sietch.server.schemas import check_guest_path

log = logging.getLogger(__name__)

public_router = APIRouter(prefix="/v1", tags=["arrakis"])
router = APIRouter(prefix="/v1", tags=["arrakis"], dependencies=[Depends(require_key)])

RegistryDep = Annotated[Registry, Depends(get_registry)]
CallerDep = Annotated[Caller, Depends(require_key)]
"""The caller (resolved once per request, with the router's own check)."""


async def vm_sandbox(
    name: str, manager: ManagerDep, registry: RegistryDep, caller: CallerDep
) -> AsyncIterator[LiveSandbox]:
    """The named VM's live sandbox, its lock held shared for the request."""
    async with manager.use((await registry.get_vm(manager, name, caller.scope)).id) as sandbox:
        yield sandbox


VmSandboxDep = Annotated[LiveSandbox, Depends(vm_sandbox)]

WORKDIR = "/tmp/server_files"
"""Where Arrakis runs commands and puts relative file paths; kept for compatibility."""
GUEST_IP = "10.0.2.15/24"
"""Every sandbox's address on its own user-mode network (QEMU's slirp default)."""

_STATUS = {
    SandboxState.CREATING: "CREATED",
    SandboxState.RUNNING: "RUNNING",
    SandboxState.PAUSED: "PAUSED",
    SandboxState.DEAD: "STOPPED",
    SandboxState.HIBERNATED: "STOPPED",
}


def vm_info(info: SandboxInfo) -> VMInfo:
    alive = info.state is not SandboxState.DEAD
    return VMInfo(
        vmName=info.labels.get(VM_LABEL, info.id),
        status=_STATUS[info.state],
        ip=GUEST_IP if alive else "",
        portForwards=[port_forward(p) for p in info.ports] if alive else [],
    )


def port_forward(mapping: PortMapping) -> PortForward:
    """An exposed port; the description is its full address, as it listens on one host only.

    Arrakis forwarded its configured ports on every address of the host (DNAT).
    """
    return PortForward(
        hostPort=str(mapping.host_port),
        guestPort=str(mapping.guest_port),
        description=f"{mapping.host}:{mapping.host_port}",
    )


def guest_path(path: str) -> str:
    """Arrakis' rule: relative paths live under :data:`WORKDIR`; absolute ones are as given."""
    if not path:
        raise InvalidArgument("a file path may not be empty")
    return check_guest_path(posixpath.join(WORKDIR, path))


async def image_for(manager: Manager, body: StartVMRequest, tenant: str) -> str | None:
    """The image named by ``rootfs`` (a user image only if ``tenant``'s: another tenant's is
    unknown); refuses any host path that is not a Sietch image.

    Arrakis boots whatever kernel and disk paths the caller names: a way to read
    any file of the host into a VM. Sietch accepts only its own artefacts.
    """
    images = manager.images
    if body.kernel and Path(body.kernel) != await asyncio.to_thread(images.kernel):
        raise InvalidArgument("kernel: only Sietch's own kernel can be booted; leave it out")
    if body.initramfs and Path(body.initramfs) != await asyncio.to_thread(images.initramfs):
        raise InvalidArgument("initramfs: only Sietch's own initramfs can be used; leave it out")
    if not body.rootfs:
        return None
    if body.rootfs in images.names():
        return body.rootfs
    if (
        custom := user_images.find(manager.store, body.rootfs, tenant)
    ) is not None and custom.ready:
        return body.rootfs  # a user image (sietch build / image import), by name
    for image in await asyncio.to_thread(images.list):
        if image.current and Path(body.rootfs) == image.path:
            return image.name
    raise InvalidArgument(
        f"rootfs: {body.rootfs!r} is not an image Sietch knows "
        f"(one of: {', '.join(images.names())}); host paths are refused"
    )


# -- health -----------------------------------------------------------------------


@public_router.get("/health", name="health", response_model=HealthResponse)
async def health() -> HealthResponse:
    """Liveness, as Arrakis reports it (no key needed, like Sietch's own /api/v1/health)."""
    return HealthResponse(timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


# -- VMs ----------------------------------------------------------------------------


@router.post("/vms", name="start", response_model=VMInfo)
async def start_vm(
    body: StartVMRequest, manager: ManagerDep, registry: RegistryDep, caller: CallerDep
) -> VMInfo:
    """Boot a VM named ``vmName``, or restore ``snapshotId`` into it."""
    labels = {VM_LABEL: body.vmName}
    async with registry.reserve_vm(manager, body.vmName, caller.tenant):
        if body.snapshotId:
            snap = await registry.get_snapshot(manager, body.snapshotId, caller.scope)
            info = await manager.restore(snap.id, labels=labels, tenant=caller.tenant)
        else:
            image = await image_for(manager, body, caller.tenant)
            info = await manager.create(image=image, labels=labels, tenant=caller.tenant)
        try:
            async with manager.use(info.id) as sandbox:
                await sandbox.mkdir(WORKDIR)
                if body.entryPoint:
                    await sandbox.start_background(body.entryPoint, cwd=WORKDIR, tag="entryPoint")
        except BaseException:
            await asyncio.shield(manager.delete(info.id))
            raise
    return vm_info(info)


@router.get("/vms", name="list", response_model=ListAllVMsResponse)
async def list_vms(
    manager: ManagerDep, registry: RegistryDep, caller: CallerDep
) -> ListAllVMsResponse:
    """Every VM of the caller's tenant made through /v1."""
    return ListAllVMsResponse(vms=[vm_info(i) for i in await registry.vms(manager, caller.scope)])


@router.delete("/vms", name="destroy_all", response_model=DestroyAllVMsResponse)
async def destroy_all_vms(
    manager: ManagerDep, registry: RegistryDep, caller: CallerDep
) -> DestroyAllVMsResponse:
    """Destroy every VM of the caller's tenant made through /v1 (sandboxes of Sietch's own
    API are left alone)."""
    infos = await registry.vms(manager, caller.scope)
    results = await asyncio.gather(*(manager.delete(i.id) for i in infos), return_exceptions=True)
    failed = [(i, r) for i, r in zip(infos, results, strict=True) if isinstance(r, Exception)]
    if failed:
        raise SietchError(
            "failed to destroy all VMs: "
            + "; ".join(f"{i.labels[VM_LABEL]}: {r}" for i, r in failed)
        )
    return DestroyAllVMsResponse()


@router.get("/vms/{name}", name="get", response_model=VMInfo)
async def get_vm(
    name: str, manager: ManagerDep, registry: RegistryDep, caller: CallerDep
) -> VMInfo:
    return vm_info(await registry.get_vm(manager, name, caller.scope))


@router.delete("/vms/{name}", name="destroy", response_model=VMResponse)
async def destroy_vm(
    name: str, manager: ManagerDep, registry: RegistryDep, caller: CallerDep
) -> VMResponse:
    """Stop the VM and remove its disk; its snapshots stay."""
    info = await registry.get_vm(manager, name, caller.scope)
    await manager.delete(info.id)
    return VMResponse(message=f"VM {name} destroyed")


@router.patch("/vms/{name}", name="update_state", response_model=VMResponse)
async def update_vm_state(
    name: str,
    body: UpdateVMStateRequest,
    manager: ManagerDep,
    registry: RegistryDep,
    caller: CallerDep,
) -> VMResponse:
    """``paused`` stops the VM's CPUs (memory and processes kept); ``stopped`` hibernates it
    (saved to disk, its QEMU ended: no RAM or CPU used); ``resume`` or ``started`` brings
    either back (a command or file call to it does too)."""
    info = await registry.get_vm(manager, name, caller.scope)
    if body.status == "paused":
        await manager.pause(info.id)
    elif body.status == "stopped":
        await manager.hibernate(info.id)
    else:
        await manager.resume(info.id)
    return VMResponse(message=f"VM {name} is {body.status}")


@router.post("/vms/{name}/snapshots", name="snapshot", response_model=VMSnapshotResponse)
async def snapshot_vm(
    name: str,
    body: SnapshotRequest,
    manager: ManagerDep,
    registry: RegistryDep,
    caller: CallerDep,
) -> VMSnapshotResponse:
    """Save memory, processes and disk (also of a restored VM); the VM keeps running."""
    info = await registry.get_vm(manager, name, caller.scope)
    snapshot_id = body.snapshotId or f"snapshot-{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    async with registry.reserve_snapshot(manager, snapshot_id, info.tenant):
        await manager.snapshot(info.id, snapshot_id, {SNAPSHOT_LABEL: snapshot_id})
    return VMSnapshotResponse(snapshotId=snapshot_id)


# -- commands and files ---------------------------------------------------------------


def _exit_error(exit_code: int | None, sig: int | None, timed_out: bool) -> str:
    """Go's ``exec.ExitError`` text, which Arrakis returns as ``error``."""
    if timed_out:
        return "command timed out (SIETCH_EXEC_TIMEOUT_S)"
    if sig is not None:
        try:
            return f"signal: {(signal.strsignal(sig) or str(sig)).lower()}"
        except ValueError:
            return f"signal: {sig}"
    if exit_code:
        return f"exit status {exit_code}"
    return ""


@router.post("/vms/{name}/cmd", name="cmd", response_model=VmCommandResponse)
async def run_cmd(
    name: str,
    body: VmCommandRequest,
    sandbox: VmSandboxDep,
    settings: SettingsDep,
) -> VmCommandResponse:
    """Run a shell command in :data:`WORKDIR`; ``output`` is stdout and stderr interleaved."""
    if not body.cmd.strip():
        raise InvalidArgument("Command cannot be empty")
    if not body.blocking:
        await sandbox.start_background(body.cmd, cwd=WORKDIR)
        return VmCommandResponse()
    output = bytearray()
    limit = settings.max_exec_output_bytes

    def collect(chunk: bytes) -> None:
        output.extend(chunk[: max(limit - len(output), 0)])

    execution = await sandbox.start(body.cmd, cwd=WORKDIR, timeout=settings.exec_timeout_s)
    try:
        result = await execution.result(on_stdout=collect, on_stderr=collect, capture=False)
    finally:
        await execution.close()
    return VmCommandResponse(
        output=output.decode("utf-8", errors="replace"),
        error=_exit_error(result.exit_code, result.signal, result.timed_out),
    )


@router.post("/vms/{name}/files", name="upload", response_model=VmFileUploadResponse)
async def upload_files(
    name: str, body: VmFileUploadRequest, sandbox: VmSandboxDep
) -> VmFileUploadResponse:
    """Write text files (parent directories are made); relative paths go under /tmp/server_files."""
    for file in body.files:
        await sandbox.write_file(guest_path(file.path), file.content.encode())
    return VmFileUploadResponse()


async def _read_capped(sandbox: LiveSandbox, path: str, limit: int) -> bytes:
    data = bytearray()
    async for chunk in sandbox.read_file(path):
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(
                f"larger than {limit} bytes: use /api/v1/sandboxes/{{id}}/files for big files"
            )
    return bytes(data)


@router.get("/vms/{name}/files", name="download", response_model=VmFileDownloadResponse)
async def download_files(
    name: str,
    sandbox: VmSandboxDep,
    settings: SettingsDep,
    paths: Annotated[str, Query(min_length=1, description="Comma-separated file paths.")],
) -> VmFileDownloadResponse:
    """Read text files; a file that cannot be read gets an ``error`` instead of content."""
    files = []
    for path in paths.split(","):
        entry = DownloadedFile(path=path)
        try:
            data = await _read_capped(sandbox, guest_path(path), settings.max_exec_output_bytes)
        except SietchError as exc:
            entry.error = f"Failed to read file: {exc.message}"
        else:
            entry.content = data.decode("utf-8", errors="replace")
        files.append(entry)
    return VmFileDownloadResponse(files=files)

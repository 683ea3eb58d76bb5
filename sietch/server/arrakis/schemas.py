"""Arrakis' wire shapes (camelCase, as in its ``api/server-api.yaml``), for ``/v1``.

Field names and optionality follow Arrakis so that ``py-arrakis`` and code
written against its REST API work unchanged. Where Sietch has nothing to put
in a field (there is no tap device: networking is user-mode QEMU) it sends the
empty value Arrakis sends for a field it does not know.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# A VM name travels in URL paths and labels: no slash, no control characters.
VM_NAME_PATTERN = r"^[^/\x00-\x1f\x7f]{1,128}$"


class _Wire(BaseModel):
    # Arrakis' Go server ignores unknown fields; so do we, so newer clients keep working.
    model_config = ConfigDict(extra="ignore")


class PortForward(_Wire):
    """A guest port reachable on the host; Arrakis sends both ports as decimal strings."""

    hostPort: str
    guestPort: str
    description: str = ""


class StartVMRequest(_Wire):
    vmName: str = Field(pattern=VM_NAME_PATTERN)
    kernel: str | None = None
    initramfs: str | None = None
    rootfs: str | None = Field(
        default=None, description="An image name Sietch knows, or that image's own path."
    )
    entryPoint: str | None = Field(
        default=None, description="A shell command started in the background once booted."
    )
    snapshotId: str | None = Field(
        default=None, description="Restore this snapshot (the original may still run)."
    )


class VMInfo(_Wire):
    """``StartVMResponse`` / ``ListVMResponse`` / an item of ``ListAllVMsResponse``."""

    vmName: str
    status: str
    ip: str = ""
    tapDeviceName: str = ""
    portForwards: list[PortForward] = Field(default_factory=list)


class ListAllVMsResponse(_Wire):
    vms: list[VMInfo]


class VMResponse(_Wire):
    success: bool = True
    message: str = ""


class DestroyAllVMsResponse(_Wire):
    success: bool = True


class UpdateVMStateRequest(_Wire):
    status: Literal["stopped", "started", "paused", "resume"]
    """``stopped`` hibernates the VM (Sietch's own addition: ``started`` brings it back)."""


class SnapshotRequest(_Wire):
    snapshotId: str = Field(default="", max_length=256)


class VMSnapshotResponse(_Wire):
    snapshotId: str


class VmCommandRequest(_Wire):
    cmd: str = Field(min_length=1)
    blocking: bool = True


class VmCommandResponse(_Wire):
    output: str = ""
    error: str = ""


class UploadFile(_Wire):
    path: str
    content: str


class VmFileUploadRequest(_Wire):
    files: list[UploadFile] = Field(min_length=1)


class VmFileUploadResponse(_Wire):
    error: str = ""


class DownloadedFile(_Wire):
    path: str
    content: str = ""
    error: str = ""


class VmFileDownloadResponse(_Wire):
    files: list[DownloadedFile]


class HealthResponse(_Wire):
    status: str = "healthy"
    timestamp: str

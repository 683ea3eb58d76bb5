"""The manager's data shapes, shared with the server's API models."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from sietch.network.policy import NetworkPolicy

DEFAULT_TENANT = "default"
"""The tenant of records made before tenants existed, and of a single-key install."""


class SandboxState(enum.StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    DEAD = "dead"
    """QEMU exited without being asked to (crash, OOM kill, host restart)."""


class SandboxSpec(BaseModel):
    """What a caller may choose for a new sandbox; ``None`` means the configured default."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = None
    vcpus: int | None = Field(default=None, ge=1)
    memory_mib: int | None = Field(default=None, ge=1)
    disk_mib: int | None = Field(default=None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(
        default_factory=dict, validation_alias=AliasChoices("labels", "metadata")
    )
    """Free-form key/values, filterable in listings (``metadata`` is the old name)."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Delete the sandbox this long after creation."""
    network: NetworkPolicy | None = None
    """Egress policy; None: the internet as configured (``SIETCH_INTERNET``), nothing else."""
    template: str | None = "auto"
    """"auto" restores the image's template (a snapshot of a booted VM, made on
    first use); None cold-boots."""
    tenant: str = DEFAULT_TENANT
    """Who will own it (set by the server from the caller's key, never by the request)."""


class PortMapping(BaseModel):
    """A guest TCP port reachable from the host at ``host:host_port``."""

    guest_port: int
    host: str = "127.0.0.1"
    host_port: int


class SandboxInfo(BaseModel):
    id: str
    state: SandboxState
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(
        default_factory=dict, validation_alias=AliasChoices("labels", "metadata")
    )
    """Records written before the rename say ``metadata``."""
    created_at: datetime
    expires_at: datetime | None = None
    accel: str
    pid: int | None = None
    error: str | None = None
    snapshot_id: str | None = None
    """The snapshot (or template) this sandbox was restored from; None if cold-booted."""
    ports: list[PortMapping] = Field(default_factory=list)
    """Exposed guest ports; a restored or forked copy exposes the same ones on new host ports."""
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    """What the sandbox may reach; changeable while it runs."""
    tenant: str = DEFAULT_TENANT
    """Who owns it: only that tenant's keys (and admin keys) see it."""


class SnapshotInfo(BaseModel):
    """An immutable saved machine: device state, RAM, disk. Snapshots form a tree."""

    id: str
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    parent_id: str | None = None
    """The snapshot the source sandbox was restored from (its disk chains on it)."""
    sandbox_id: str | None = None
    """The sandbox it was taken of."""
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    env: dict[str, str] = Field(default_factory=dict)
    accel: str
    size_bytes: int = 0
    """Bytes allocated on the host (a reflinked copy shares most of them)."""
    state_format: Literal["migration", "devices"] = "migration"
    """``devices``: ``state`` holds device sections only and ``memory`` is the RAM (every
    snapshot taken now); ``migration``: a migration stream (snapshots recorded before,
    and the fallback where QEMU's memory can't be read)."""
    ram_in_stream: bool = False
    """RAM is inside the migration stream (the fallback for a copy-on-write restore)."""
    disk: str = "disk.qcow2"
    """Its disk's top layer, relative to its directory."""
    standalone: bool = False
    """Its whole disk chain down to the image is in its own directory (``layers/``), so
    deleting its ancestors never breaks it; older snapshots chain on their parent's disk."""
    ports: list[int] = Field(default_factory=list)
    """Guest ports its sandbox had exposed; every restore exposes them again."""
    network: NetworkPolicy | None = None
    """Its sandbox's egress policy, which restores keep unless told otherwise."""
    template: bool = False
    template_key: str | None = None
    tenant: str = DEFAULT_TENANT
    """Its sandbox's tenant; a template is shared by every tenant whatever it says."""
    paths: dict[str, str] = Field(default_factory=dict)
    """kernel, initramfs, tools disk it must be restored with (the guest already runs them)."""


class CommandResult(BaseModel):
    exit_code: int | None
    """None when the process was killed by a signal."""
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False
    pid: int | None = None
    duration_s: float = 0.0


class ProcessInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    pid: int
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    argv: list[str] | None = None
    cmd: str | None = None
    tag: str | None = None
    pty: bool = False
    background: bool = False
    started_at: float | None = None


class FileInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: float
    target: str | None = None

    @classmethod
    def from_agent(cls, entry: dict[str, Any]) -> FileInfo:
        return cls.model_validate(entry)

"""The manager's data shapes, shared with the server's API models."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from sietch.network.policy import NetworkPolicy


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
    user: str | None = None
    """Who commands run as when the caller names nobody (an image's ``USER``); None: root."""
    cwd: str | None = None
    """Where commands start when the caller names no directory (an image's ``WORKDIR``)."""


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
    user: str | None = None
    cwd: str | None = None
    """Its sandbox's default user and directory for commands, which restores keep."""
    template: bool = False
    template_key: str | None = None
    paths: dict[str, str] = Field(default_factory=dict)
    """kernel, initramfs, tools disk it must be restored with (the guest already runs them)."""


class ImageConfig(BaseModel):
    """What a user image's sandboxes start with: Docker's image config, as Sietch honours it."""

    env: dict[str, str] = Field(default_factory=dict)
    """The default environment of every command (``ENV``)."""
    user: str | None = None
    """The default user of commands and of the start command (``USER``)."""
    workdir: str | None = None
    """The default directory (``WORKDIR``)."""
    start: list[str] | None = None
    """The start command's argv (``ENTRYPOINT`` + ``CMD``): running in the template, so it
    is up the moment a sandbox is created."""
    ready: list[str] | None = None
    """Exits 0 once the start command is ready (``HEALTHCHECK CMD``); None: the exposed
    ports accept connections."""
    ready_timeout_s: float | None = None
    expose: list[int] = Field(default_factory=list)
    """Guest ports exposed on every create (``EXPOSE``)."""
    labels: dict[str, str] = Field(default_factory=dict)


class ImageRecord(BaseModel):
    """A user image (a Dockerfile or template build, an OCI import): a disk and a config."""

    name: str
    source: Literal["dockerfile", "oci"] = "dockerfile"
    """A Dockerfile build (the Python template builder writes one too) or an OCI import."""
    base: str
    """The image it was built ``FROM`` (``oci`` for an import)."""
    key: str
    """The build's last cache key: equal keys, equal images."""
    rootfs: str
    """Its disk: the top layer (qcow2, chained on the layers below) or a raw ext4."""
    format: Literal["raw", "qcow2"] = "qcow2"
    layers: list[str] = Field(default_factory=list)
    """Every file its disk needs, top first (kept while the image exists)."""
    disk_mib: int
    """The disk size set at build: the smallest (and default) disk of its sandboxes."""
    size_bytes: int = 0
    """Bytes its own layers take on the host (not those of its base)."""
    steps: list[str] = Field(default_factory=list)
    created_at: datetime
    config: ImageConfig = Field(default_factory=ImageConfig)
    ready: bool = False
    """False while its build makes its template: not listed, not usable by others."""


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

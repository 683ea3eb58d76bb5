"""The manager's data shapes, shared with the server's API models."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from sietch.network.policy import NetworkPolicy

MIN_SCREEN, MAX_SCREEN = (320, 200), (7680, 4320)
MIN_DPI, MAX_DPI = 48, 480
DEFAULT_TENANT = "default"
"""The tenant of records made before tenants existed, and of a single-key install."""


class SandboxState(enum.StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    PAUSED = "paused"
    DEAD = "dead"
    """QEMU exited without being asked to (crash, OOM kill, host restart)."""
    HIBERNATED = "hibernated"
    """Saved to disk (memory, processes, disk) and its QEMU ended: it holds no RAM or CPU;
    ``resume`` (or any request, with ``auto_resume``) restores it under the same id."""
    LOST = "lost"
    """In a cluster: on a node that stopped answering (a gateway's listing says so); it
    is back as it was when its node returns."""


TimeoutAction = Literal["kill", "pause", "hibernate"]
"""What a timeout does: delete the sandbox, stop its vCPUs, or hibernate it to disk."""


class Timeouts(BaseModel):
    """When a sandbox times out and what then happens; shared by the spec and the record."""

    timeout_s: float | None = Field(default=None, gt=0)
    """Act this long after creation (and again after every resume); None: never."""
    on_timeout: TimeoutAction = "kill"
    idle_timeout_s: float | None = Field(default=None, gt=0)
    """Act once the sandbox has been idle this long: no API call on it, no command or process
    started through the API still running, no proxy, relay, terminal or desktop open."""
    on_idle: TimeoutAction = "hibernate"
    auto_resume: bool = True
    """A request to a paused or hibernated sandbox (exec, files, port proxy) wakes it."""


class Screen(BaseModel):
    """A desktop's screen: its size in pixels and its resolution (DPI)."""

    width: int = Field(ge=MIN_SCREEN[0], le=MAX_SCREEN[0])
    height: int = Field(ge=MIN_SCREEN[1], le=MAX_SCREEN[1])
    dpi: int = Field(default=96, ge=MIN_DPI, le=MAX_DPI)


class DesktopInfo(Screen):
    """A desktop sandbox's screen and the password of its VNC server (its own, random,
    set at every create, restore and fork: a copy never shares its source's)."""

    vnc_password: str


class SandboxSpec(Timeouts):
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
    network: NetworkPolicy | None = None
    """Egress policy; None: the internet as configured (``SIETCH_INTERNET``), nothing else."""
    template: str | None = "auto"
    """"auto" restores the image's template (a snapshot of a booted VM, made on
    first use); None cold-boots."""
    resolution: tuple[int, int] | None = None
    """A desktop image's screen (width, height): the running X server is resized
    (RandR), so every size shares the image's one template."""
    dpi: int | None = Field(default=None, ge=MIN_DPI, le=MAX_DPI)

    @field_validator("resolution")
    @classmethod
    def _fits(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None:
            Screen(width=size[0], height=size[1])
        return size

    tenant: str = DEFAULT_TENANT
    """Who will own it (set by the server from the caller's key, never by the request)."""


class PortMapping(BaseModel):
    """A guest TCP port reachable from the host at ``host:host_port``."""

    guest_port: int
    host: str = "127.0.0.1"
    host_port: int


class SandboxInfo(Timeouts):
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
    """When ``on_timeout`` happens; None: no timeout pending."""
    accel: str
    pid: int | None = None
    error: str | None = None
    snapshot_id: str | None = None
    """The snapshot (or template) this sandbox was restored from; None if cold-booted. A
    hibernated sandbox: the hibernation snapshot it sleeps in (and is resumed from)."""
    ports: list[PortMapping] = Field(default_factory=list)
    """Exposed guest ports; a restored or forked copy exposes the same ones on new host ports."""
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    """What the sandbox may reach; changeable while it runs."""
    desktop: DesktopInfo | None = None
    """Its desktop's screen and VNC password; None when its image has no desktop."""
    tenant: str = DEFAULT_TENANT
    """Who owns it: only that tenant's keys (and admin keys) see it."""
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
    desktop: Screen | None = None
    """Its sandbox's screen; a restore sets a VNC password of its own (not the source's)."""
    user: str | None = None
    cwd: str | None = None
    """Its sandbox's default user and directory for commands, which restores keep."""
    template: bool = False
    template_key: str | None = None
    hibernation: bool = False
    """Internal: a hibernated sandbox's saved machine, not listed; it goes when the sandbox
    is deleted or hibernates again."""
    expires_at: datetime | None = None
    """Deleted after this once nothing uses it (``ttl_s``); None: kept."""
    tenant: str = DEFAULT_TENANT
    """Its sandbox's tenant; a template is shared by every tenant whatever it says."""
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
    tenant: str = DEFAULT_TENANT
    """Who built or imported it: only that tenant's sandboxes and builds use it, only that
    tenant (and an admin) sees it. Records from before tenants are ``default``'s."""


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

"""Request (``*Create``) and response (``*Public``) shapes of the API.

Request models are strict (no "2" for 2) and forbid unknown fields, so a
typo in a field name is a 422 rather than a silently ignored option.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, Strict

from sietch.core.models import (
    MAX_DPI,
    MAX_SCREEN,
    MIN_DPI,
    MIN_SCREEN,
    ProcessInfo,
    SandboxState,
    Screen,
    TimeoutAction,
)
from sietch.errors import InvalidArgument
from sietch.network.policy import NetworkPolicy, normalise_entry

MAX_PATH = 4096


def check_guest_path(path: str) -> str:
    """Refuse paths that could not name one file of the guest plainly."""
    if "\0" in path:
        raise InvalidArgument("a path may not contain NUL bytes")
    if ".." in path.split("/"):
        raise InvalidArgument(f"a path may not contain '..' components: {path!r}")
    return path


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise InvalidArgument("strings may not contain NUL bytes")
    return value


GuestPath = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATH, description="Path in the guest; no '..' parts."),
    AfterValidator(check_guest_path),
]
SafeStr = Annotated[str, AfterValidator(_no_nul)]
Command = Annotated[
    SafeStr | list[SafeStr],
    Field(
        description="A string runs in the guest's shell; a list is an argv run directly.",
        examples=["echo hello", ["python3", "-c", "print(1)"]],
    ),
]
SignalName = Annotated[int | str, Field(examples=["SIGTERM", 9])]
User = Annotated[
    SafeStr | Annotated[int, Field(ge=0, le=2**32 - 2)],
    Field(description="A user name or uid to run as (default: root)."),
]


LABELS_ALIAS = AliasChoices("labels", "metadata")
"""Sandboxes' labels were called ``metadata`` on the wire before; old clients still send it."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# -- network --------------------------------------------------------------------

AllowEntry = Annotated[
    str,
    Field(min_length=1, max_length=253, examples=["pypi.org", "203.0.113.0/24"]),
    AfterValidator(normalise_entry),
]


class NetworkSet(_Request):
    """A sandbox's egress policy. The host, its private networks and other sandboxes are
    never reachable unless a CIDR in ``allow`` names them (the host's own addresses never)."""

    internet: bool = Field(default=True, description="Reach public internet addresses.")
    allow: list[AllowEntry] = Field(
        default_factory=list,
        max_length=256,
        description="CIDRs and domain names (with their subdomains) reachable either way.",
    )

    def policy(self) -> NetworkPolicy:
        return NetworkPolicy(internet=self.internet, allow=self.allow)


# -- sandboxes ------------------------------------------------------------------

Seconds = Annotated[float, Field(gt=0, le=365 * 86400, allow_inf_nan=False)]


class TimeoutsCreate(_Request):
    """When a new sandbox times out and what then happens (see ``POST .../timeout``)."""

    timeout_s: Seconds | None = Field(
        default=None,
        description="Do `on_timeout` this long after creation (and after every resume).",
    )
    on_timeout: TimeoutAction = Field(
        default="kill",
        description="kill: delete it; pause: stop its CPUs; hibernate: save it to disk.",
    )
    idle_timeout_s: Seconds | None = Field(
        default=None,
        description="Do `on_idle` once no API call, command, process started through the API, "
        "proxy, relay or terminal has been active for this long.",
    )
    on_idle: TimeoutAction = "hibernate"
    auto_resume: bool = Field(
        default=True,
        description="A request to it when paused or hibernated (exec, files, proxy) wakes it.",
    )


class TimeoutSet(_Request):
    """New timeouts of a sandbox (running, paused or hibernated); fields left out stay."""

    timeout_s: Seconds | None = Field(
        default=None, description="Counted from now; null: no timeout."
    )
    on_timeout: TimeoutAction | None = None
    idle_timeout_s: Seconds | None = Field(default=None, description="null: no idle timeout.")
    on_idle: TimeoutAction | None = None
    auto_resume: bool | None = None

    def changes(self) -> dict[str, object]:
        """The fields sent; a null clears a timeout and leaves anything else as it was."""
        return {
            k: getattr(self, k)
            for k in self.model_fields_set
            if getattr(self, k) is not None or k.endswith("_s")
        }


class SandboxCreate(TimeoutsCreate):
    image: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    vcpus: Annotated[int, Field(ge=1, le=1024)] | None = None
    memory_mib: Annotated[int, Field(ge=1, le=1 << 24)] | None = None
    disk_mib: Annotated[int, Field(ge=1, le=1 << 24)] | None = None
    env: dict[SafeStr, SafeStr] = Field(default_factory=dict, max_length=1024)
    labels: dict[SafeStr, SafeStr] = Field(
        default_factory=dict,
        max_length=64,
        validation_alias=LABELS_ALIAS,
        description="Free-form key/values, filterable in listings (`metadata` is accepted too).",
    )
    template: Literal["auto"] | None = Field(
        default="auto",
        description="'auto' restores the image's warm template; null boots from scratch.",
    )
    network: NetworkSet | None = Field(
        default=None, description="Egress policy; default: the internet (SIETCH_INTERNET)."
    )
    resolution: (
        Annotated[
            tuple[
                Annotated[int, Strict(), Field(ge=MIN_SCREEN[0], le=MAX_SCREEN[0])],
                Annotated[int, Strict(), Field(ge=MIN_SCREEN[1], le=MAX_SCREEN[1])],
            ],
            # FastAPI validates the parsed body, where a JSON array is a list: strict
            # mode would refuse every [width, height] as "not a valid tuple".
            Strict(False),
        ]
        | None
    ) = Field(
        default=None,
        description="A desktop image's screen [width, height] (default 1280x800): the running "
        "X server is resized.",
    )
    dpi: Annotated[int, Field(ge=MIN_DPI, le=MAX_DPI)] | None = None
    prefer_node: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None,
        description="In a cluster: the node to place it on if that one has room (locality); "
        "a single server is its only node and ignores it.",
    )


class PortCreate(_Request):
    port: int = Field(description="The guest TCP port, 1 to 65535.", examples=[8000])


class PortPublic(BaseModel):
    guest_port: int
    host: str
    """Where the host reaches it: always 127.0.0.1 (use the proxy route from elsewhere)."""
    host_port: int


class PortsPublic(BaseModel):
    data: list[PortPublic]
    count: int


class SandboxPublic(BaseModel):
    id: str
    state: SandboxState
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    env: dict[str, str]
    labels: dict[str, str]
    created_at: datetime
    expires_at: datetime | None
    """When `on_timeout` happens; null: no timeout pending."""
    timeout_s: float | None = None
    on_timeout: TimeoutAction = "kill"
    idle_timeout_s: float | None = None
    on_idle: TimeoutAction = "hibernate"
    auto_resume: bool = True
    accel: str
    error: str | None = None
    snapshot_id: str | None = None
    """The snapshot or template it was restored from; null if cold-booted."""
    ports: list[PortPublic] = Field(default_factory=list)
    """Exposed guest ports and where the host reaches them."""
    network: NetworkPolicy
    """What it may reach (change it with PUT .../network)."""
    desktop: Screen | None = None
    """Its desktop's screen; null when its image has none."""
    tenant: str
    """Who owns it: the tenant of the key that made it."""


class SandboxesPublic(BaseModel):
    data: list[SandboxPublic]
    count: int


# -- snapshots ------------------------------------------------------------------

Labels = Annotated[dict[SafeStr, SafeStr], Field(max_length=64)]


class SnapshotCreate(_Request):
    name: Annotated[SafeStr, Field(min_length=1, max_length=128)] | None = None
    labels: Labels = Field(default_factory=dict)
    ttl_s: Seconds | None = Field(
        default=None,
        description="Delete the snapshot this long from now, once no sandbox restored from "
        "it and no snapshot chained on it is left.",
    )


class RestoreCreate(TimeoutsCreate):
    labels: Labels = Field(
        default_factory=dict,
        validation_alias=LABELS_ALIAS,
        description="Labels of the new sandbox.",
    )
    env: dict[SafeStr, SafeStr] = Field(default_factory=dict, max_length=1024)
    hostname: Annotated[SafeStr, Field(min_length=1, max_length=64)] | None = None
    network: NetworkSet | None = Field(
        default=None, description="Egress policy; default: the snapshot's sandbox's."
    )
    prefer_node: Annotated[str, Field(min_length=1, max_length=253)] | None = Field(
        default=None,
        description="In a cluster: restore on this node, the snapshot copied there first if "
        "it is elsewhere; a single server ignores it.",
    )


class ForkCreate(_Request):
    count: Annotated[int, Field(ge=1, le=1024)] = 1
    labels: Labels = Field(
        default_factory=dict, validation_alias=LABELS_ALIAS, description="Labels of every fork."
    )


class SnapshotPublic(BaseModel):
    id: str
    name: str | None
    labels: dict[str, str]
    created_at: datetime
    parent_id: str | None
    """The snapshot its sandbox was restored from: snapshots form a tree."""
    sandbox_id: str | None
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    size_bytes: int
    template: bool
    hibernation: bool = False
    """A hibernated sandbox's saved machine (internal: not listed)."""
    expires_at: datetime | None = None
    """Deleted after this once unused (`ttl_s`)."""
    tenant: str
    """Its sandbox's tenant (templates are shared by every tenant)."""


class SnapshotsPublic(BaseModel):
    data: list[SnapshotPublic]
    count: int


# -- exec -----------------------------------------------------------------------

Encoding = Literal["utf-8", "base64"]


class ExecCreate(_Request):
    cmd: Command
    env: dict[SafeStr, SafeStr] = Field(default_factory=dict)
    cwd: GuestPath | None = None
    user: User | None = None
    timeout: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = None
    stdin: str | None = Field(default=None, description="Standard input, in `encoding`.")
    encoding: Encoding = Field(
        default="utf-8",
        description="utf-8: text (undecodable bytes replaced); base64: exact bytes.",
    )


class CommandResult(BaseModel):
    exit_code: int | None = Field(description="None when a signal ended the command.")
    signal: int | None = None
    stdout: str
    stderr: str
    encoding: Encoding
    timed_out: bool
    truncated: bool = Field(description="Output beyond the server's limit was dropped.")
    duration_s: float
    pid: int | None = None


# -- processes ------------------------------------------------------------------


class ProcessCreate(_Request):
    cmd: Command
    env: dict[SafeStr, SafeStr] = Field(default_factory=dict)
    cwd: GuestPath | None = None
    user: User | None = None
    tag: Annotated[str, Field(max_length=256)] | None = None
    timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


class ProcessPublic(ProcessInfo):
    """A process the agent started, as the manager reports it."""


class ProcessesPublic(BaseModel):
    data: list[ProcessPublic]
    count: int


class SignalCreate(_Request):
    signal: SignalName = "SIGTERM"


class ProcessExit(BaseModel):
    pid: int
    running: bool = Field(description="Still running when the wait's timeout passed.")
    exit_code: int | None
    signal: int | None = None


# -- files ----------------------------------------------------------------------


class FilePublic(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    path: str
    type: str
    size: int
    mode: int
    mtime: float
    target: str | None = None


class FilesPublic(BaseModel):
    data: list[FilePublic]
    count: int


class FileWritten(BaseModel):
    path: str
    size: int


class MkdirCreate(_Request):
    path: GuestPath
    parents: bool = True


class RenameCreate(_Request):
    src: GuestPath
    dst: GuestPath
    overwrite: bool = False


# -- system ---------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Limits(BaseModel):
    max_vcpus: int
    min_memory_mib: int
    max_memory_mib: int
    max_disk_mib: int
    max_sandboxes: int
    max_request_bytes: int
    max_upload_bytes: int
    max_exec_output_bytes: int
    create_rate_per_min: float
    create_burst: int


class Defaults(BaseModel):
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int


class ServerInfo(BaseModel):
    version: str
    accel: str
    auth: bool
    sandboxes: int
    limits: Limits
    defaults: Defaults
    cgroups: str = ""
    """Per-sandbox host limits: the cgroup hierarchy in use, or why there is none."""
    jail: str = ""
    """Whether each QEMU runs jailed (its own root, PID and IPC namespaces), or why not."""
    memory_reserve_mib: int = 0
    """Creates and resumes are refused (503) below this much MemAvailable on the host."""


class QuotaPublic(BaseModel):
    """A tenant's limits; null is unlimited."""

    max_sandboxes: int | None
    max_vcpus: int | None
    max_memory_mib: int | None
    max_snapshot_disk_mib: int | None
    max_image_disk_mib: int | None
    create_rate_per_min: float | None
    create_burst: int


class UsagePublic(BaseModel):
    sandboxes: int
    vcpus: int
    memory_mib: int
    snapshot_disk_mib: int
    image_disk_mib: int


class TenantPublic(BaseModel):
    """The caller's tenant, its key, its quota and what it uses of it now."""

    name: str
    key: str
    """The name of the key the request carried."""
    admin: bool
    """An admin key sees and drives every tenant's sandboxes."""
    quota: QuotaPublic
    usage: UsagePublic


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, object] | None = None


class ErrorPublic(BaseModel):
    """Every error the API returns has this shape."""

    error: ErrorBody

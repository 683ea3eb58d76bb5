"""What the SDK hands back: plain, typed records of the API's answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    # Tolerate fields a newer server adds.
    model_config = ConfigDict(extra="allow", frozen=True)


class PortInfo(_Record):
    """An exposed guest port: the host reaches it at ``host:host_port``."""

    guest_port: int
    host: str
    host_port: int

    @property
    def url(self) -> str:
        """``http://host:host_port`` (for a web server behind the port)."""
        return f"http://{self.host}:{self.host_port}"


class DesktopView(_Record):
    """A live view of a desktop sandbox for a person: open ``viewer_url`` in a browser."""

    viewer_url: str
    """noVNC through the server; its token is traded for a cookie on the first visit."""
    vnc_password: str
    """For a VNC client of your own on ``expose(5900)``; the viewer supplies it itself."""
    width: int
    height: int
    view_only: bool = False
    expires_at: float
    """When the link and the browser session it opens end (seconds since the epoch)."""


class NetworkPolicy(_Record):
    """What a sandbox may reach: public internet addresses if ``internet``, and ``allow``
    (CIDRs, domain names with their subdomains) either way. Never the host itself."""

    internet: bool = True
    allow: list[str] = []


TimeoutAction = Literal["kill", "pause", "hibernate"]
"""What a timeout does: delete the sandbox, stop its CPUs, or hibernate it to disk."""


class Screen(_Record):
    width: int
    height: int
    dpi: int = 96


class SandboxInfo(_Record):
    id: str
    state: str
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    created_at: datetime
    expires_at: datetime | None = None
    """When ``on_timeout`` happens; None: no timeout pending."""
    timeout_s: float | None = None
    on_timeout: TimeoutAction = "kill"
    idle_timeout_s: float | None = None
    on_idle: TimeoutAction = "hibernate"
    auto_resume: bool = True
    """A request to it when paused or hibernated wakes it."""
    accel: str
    error: str | None = None
    snapshot_id: str | None = None
    """The snapshot or template it was restored from; None if cold-booted."""
    ports: list[PortInfo] = []
    """Exposed guest ports (see :meth:`Sandbox.expose`)."""
    network: NetworkPolicy = NetworkPolicy()
    """Its egress policy (see :meth:`Sandbox.set_network`)."""
    desktop: Screen | None = None
    """Its desktop's screen, for a desktop image (see ``sb.desktop``)."""
    tenant: str = "default"
    """The tenant that owns it."""


class SnapshotInfo(_Record):
    id: str
    name: str | None = None
    labels: dict[str, str] = {}
    created_at: datetime
    parent_id: str | None = None
    """The snapshot its sandbox was restored from: snapshots form a tree."""
    sandbox_id: str | None = None
    image: str
    vcpus: int
    memory_mib: int
    disk_mib: int
    size_bytes: int = 0
    template: bool = False
    hibernation: bool = False
    expires_at: datetime | None = None
    """Deleted after this once unused (``ttl_s``)."""
    tenant: str = "default"


class ImageInfo(_Record):
    """An image sandboxes can be created from: built-in, or built/imported by a user."""

    name: str
    source: str
    """``builtin``, ``dockerfile`` (also the template builder's) or ``oci``."""
    base: str | None = None
    size_bytes: int = 0
    """Bytes its own layers take on the server (not its base's)."""
    disk_mib: int
    created_at: datetime
    steps: list[str] = []
    config: dict[str, Any] = {}
    """env, user, workdir, start, ready, expose, labels."""
    users: list[str] = []
    """Sandboxes and snapshots that use it (only in get/list answers)."""
    tenant: str | None = None
    """The tenant that built or imported it (None: a built-in image, everyone's)."""


class ProcessInfo(_Record):
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


class ProcessExit(_Record):
    pid: int
    exit_code: int | None
    signal: int | None = None
    running: bool = False


class FileInfo(_Record):
    name: str
    path: str
    type: str
    """``file``, ``dir``, ``symlink`` or another kind the guest reports."""
    size: int
    mode: int
    mtime: float
    target: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type in ("dir", "directory")


class WriteInfo(_Record):
    path: str
    size: int


class ServerInfo(_Record):
    version: str
    accel: str
    auth: bool
    sandboxes: int
    limits: dict[str, Any]
    defaults: dict[str, Any]


class TenantInfo(_Record):
    """The caller's tenant (``client.tenant()``): its quota (None = unlimited) and usage."""

    name: str
    key: str
    admin: bool
    quota: dict[str, Any]
    usage: dict[str, Any]


class UsageSample(_Record):
    """What a sandbox used at one moment (None where the host or guest can't tell); see
    the server's ``GET /api/v1/sandboxes/{id}/metrics`` for what each field counts."""

    at: datetime
    uptime_s: float
    cpu_seconds: float | None = None
    cpu_percent: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    memory_pss_bytes: int | None = None
    pids: int | None = None
    disk_bytes: int | None = None
    guest_memory_used_bytes: int | None = None
    guest_memory_total_bytes: int | None = None
    guest_disk_used_bytes: int | None = None
    net_rx_bytes: int | None = None
    net_tx_bytes: int | None = None


class SandboxMetrics(_Record):
    sandbox_id: str
    state: str
    current: UsageSample
    history: list[UsageSample] = []
    """Host-side samples of the last minutes, oldest first."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended, and its output (bytes kept exact; ``stdout`` decodes them)."""

    exit_code: int | None
    """None when a signal ended it (see ``signal``)."""
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""
    signal: int | None = None
    timed_out: bool = False
    truncated: bool = False
    duration_s: float = 0.0
    pid: int | None = None

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class CodeResult(_Record):
    """One rich output of a cell: its value (``is_main_result``) or something it displayed
    (a chart, a table); each format it came in is set."""

    # Image bytes are base64 in JSON (model_dump(mode="json"), the CLI's --json).
    model_config = ConfigDict(
        extra="allow", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    text: str | None = None
    html: str | None = None
    markdown: str | None = None
    svg: str | None = None
    png: bytes | None = None
    jpeg: bytes | None = None
    latex: str | None = None
    json_data: Any = Field(None, alias="json")
    javascript: str | None = None
    data: Any = None
    """A pandas DataFrame's columns."""
    chart: dict[str, Any] | None = None
    """A matplotlib figure's data: ``type`` (line, scatter, bar, ...), ``title``, ``elements``."""
    is_main_result: bool = False
    extra: dict[str, Any] = {}


class CodeError(_Record):
    """The exception a cell raised."""

    name: str
    value: str
    traceback: str


class Execution(_Record):
    """What a cell did: its output, its results, and the error it raised if it did."""

    stdout: str = ""
    stderr: str = ""
    results: list[CodeResult] = []
    error: CodeError | None = None
    execution_count: int | None = None

    @property
    def text(self) -> str | None:
        """The cell's value as text (its last expression), if it had one."""
        return next((r.text for r in self.results if r.is_main_result), None)

    @property
    def images(self) -> list[bytes]:
        """Every PNG or JPEG the cell displayed, in order."""
        return [img for r in self.results for img in (r.png, r.jpeg) if img is not None]

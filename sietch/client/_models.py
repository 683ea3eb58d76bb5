"""What the SDK hands back: plain, typed records of the API's answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


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


class NetworkPolicy(_Record):
    """What a sandbox may reach: public internet addresses if ``internet``, and ``allow``
    (CIDRs, domain names with their subdomains) either way. Never the host itself."""

    internet: bool = True
    allow: list[str] = []


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
    accel: str
    error: str | None = None
    snapshot_id: str | None = None
    """The snapshot or template it was restored from; None if cold-booted."""
    ports: list[PortInfo] = []
    """Exposed guest ports (see :meth:`Sandbox.expose`)."""
    network: NetworkPolicy = NetworkPolicy()
    """Its egress policy (see :meth:`Sandbox.set_network`)."""


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

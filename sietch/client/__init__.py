"""Python SDK for a Sietch server, sync (:class:`Sandbox`) and asyncio (:class:`AsyncSandbox`).

Reads ``SIETCH_URL`` and ``SIETCH_API_KEY`` from the environment unless given.
"""

from sietch.client._async import (
    AsyncClient,
    AsyncDesktop,
    AsyncFiles,
    AsyncIde,
    AsyncProcesses,
    AsyncProcessHandle,
    AsyncPty,
    AsyncSandbox,
)
from sietch.client._core import NOT_GIVEN
from sietch.client._models import (
    CommandResult,
    DesktopView,
    FileInfo,
    NetworkPolicy,
    PortInfo,
    ProcessExit,
    ProcessInfo,
    SandboxInfo,
    SandboxMetrics,
    Screen,
    ServerInfo,
    SnapshotInfo,
    TenantInfo,
    UsageSample,
    WriteInfo,
)
from sietch.client._sync import (
    Client,
    Desktop,
    Files,
    Ide,
    Processes,
    ProcessHandle,
    Pty,
    Sandbox,
)

__all__ = [
    "NOT_GIVEN",
    "AsyncClient",
    "AsyncDesktop",
    "AsyncFiles",
    "AsyncIde",
    "AsyncProcessHandle",
    "AsyncProcesses",
    "AsyncPty",
    "AsyncSandbox",
    "Client",
    "CommandResult",
    "Desktop",
    "DesktopView",
    "FileInfo",
    "Files",
    "Ide",
    "NetworkPolicy",
    "PortInfo",
    "ProcessExit",
    "ProcessHandle",
    "ProcessInfo",
    "Processes",
    "Pty",
    "Sandbox",
    "SandboxInfo",
    "SandboxMetrics",
    "Screen",
    "ServerInfo",
    "SnapshotInfo",
    "TenantInfo",
    "UsageSample",
    "WriteInfo",
]

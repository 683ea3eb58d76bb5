"""Python SDK for a Sietch server, sync (:class:`Sandbox`) and asyncio (:class:`AsyncSandbox`).

Reads ``SIETCH_URL`` and ``SIETCH_API_KEY`` from the environment unless given.
"""

from sietch.client._async import (
    AsyncClient,
    AsyncFiles,
    AsyncProcesses,
    AsyncProcessHandle,
    AsyncPty,
    AsyncSandbox,
)
from sietch.client._core import NOT_GIVEN
from sietch.client._models import (
    CommandResult,
    FileInfo,
    NetworkPolicy,
    PortInfo,
    ProcessExit,
    ProcessInfo,
    SandboxInfo,
    SandboxMetrics,
    ServerInfo,
    SnapshotInfo,
    UsageSample,
    WriteInfo,
)
from sietch.client._sync import Client, Files, Processes, ProcessHandle, Pty, Sandbox

__all__ = [
    "NOT_GIVEN",
    "AsyncClient",
    "AsyncFiles",
    "AsyncProcessHandle",
    "AsyncProcesses",
    "AsyncPty",
    "AsyncSandbox",
    "Client",
    "CommandResult",
    "FileInfo",
    "Files",
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
    "ServerInfo",
    "SnapshotInfo",
    "UsageSample",
    "WriteInfo",
]

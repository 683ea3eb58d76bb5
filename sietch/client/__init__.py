"""Python SDK for a Sietch server, sync (:class:`Sandbox`) and asyncio (:class:`AsyncSandbox`).

Reads ``SIETCH_URL`` and ``SIETCH_API_KEY`` from the environment unless given.
"""

from sietch.client._async import (
    AsyncClient,
    AsyncFiles,
    AsyncImages,
    AsyncProcesses,
    AsyncProcessHandle,
    AsyncPty,
    AsyncSandbox,
)
from sietch.client._core import NOT_GIVEN
from sietch.client._models import (
    CommandResult,
    FileInfo,
    ImageInfo,
    NetworkPolicy,
    PortInfo,
    ProcessExit,
    ProcessInfo,
    SandboxInfo,
    ServerInfo,
    SnapshotInfo,
    WriteInfo,
)
from sietch.client._sync import Client, Files, Images, Processes, ProcessHandle, Pty, Sandbox
from sietch.client.template import Template

__all__ = [
    "NOT_GIVEN",
    "AsyncClient",
    "AsyncFiles",
    "AsyncImages",
    "AsyncProcessHandle",
    "AsyncProcesses",
    "AsyncPty",
    "AsyncSandbox",
    "Client",
    "CommandResult",
    "FileInfo",
    "Files",
    "ImageInfo",
    "Images",
    "NetworkPolicy",
    "PortInfo",
    "ProcessExit",
    "ProcessHandle",
    "ProcessInfo",
    "Processes",
    "Pty",
    "Sandbox",
    "SandboxInfo",
    "ServerInfo",
    "SnapshotInfo",
    "Template",
    "WriteInfo",
]

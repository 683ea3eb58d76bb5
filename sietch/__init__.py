"""Sietch: self-hosted microVM sandboxes for AI agents.

The SDK is loaded on first use of one of its names: the guest agent imports
this package too, where only the standard library exists.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sietch.errors import (
    AgentUnavailable,
    AuthenticationError,
    BadGateway,
    BootError,
    CommandTimeout,
    Conflict,
    FileExists,
    FileNotFound,
    ImageBuildError,
    ImageNotFound,
    InvalidArgument,
    LimitExceeded,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ProcessNotFound,
    SandboxNotFound,
    SandboxNotRunning,
    SietchError,
    Unavailable,
    ValidationFailed,
    VMError,
)

if TYPE_CHECKING:
    from sietch.client import (
        NOT_GIVEN,
        AsyncClient,
        AsyncProcessHandle,
        AsyncPty,
        AsyncSandbox,
        Client,
        CommandResult,
        FileInfo,
        ProcessExit,
        ProcessHandle,
        ProcessInfo,
        Pty,
        Sandbox,
        SandboxInfo,
        ServerInfo,
        WriteInfo,
    )

__version__ = "0.1.0"

_SDK = frozenset(
    {
        "NOT_GIVEN",
        "AsyncClient",
        "AsyncProcessHandle",
        "AsyncPty",
        "AsyncSandbox",
        "Client",
        "CommandResult",
        "FileInfo",
        "ProcessExit",
        "ProcessHandle",
        "ProcessInfo",
        "Pty",
        "Sandbox",
        "SandboxInfo",
        "ServerInfo",
        "WriteInfo",
    }
)

__all__ = [
    "NOT_GIVEN",
    "AgentUnavailable",
    "AsyncClient",
    "AsyncProcessHandle",
    "AsyncPty",
    "AsyncSandbox",
    "AuthenticationError",
    "BadGateway",
    "BootError",
    "Client",
    "CommandResult",
    "CommandTimeout",
    "Conflict",
    "FileExists",
    "FileInfo",
    "FileNotFound",
    "ImageBuildError",
    "ImageNotFound",
    "InvalidArgument",
    "LimitExceeded",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProcessExit",
    "ProcessHandle",
    "ProcessInfo",
    "ProcessNotFound",
    "Pty",
    "Sandbox",
    "SandboxInfo",
    "SandboxNotFound",
    "SandboxNotRunning",
    "ServerInfo",
    "SietchError",
    "Unavailable",
    "VMError",
    "ValidationFailed",
    "WriteInfo",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _SDK:
        value = getattr(importlib.import_module("sietch.client"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sietch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SDK)

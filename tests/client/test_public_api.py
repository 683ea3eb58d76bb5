"""The package's public surface is explicit, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import sietch
import sietch.client

EXPECTED = {
    "__version__",
    # SDK
    "AsyncClient",
    "AsyncProcessHandle",
    "AsyncPty",
    "AsyncSandbox",
    "Client",
    "CommandResult",
    "FileInfo",
    "NOT_GIVEN",
    "ProcessExit",
    "ProcessHandle",
    "ProcessInfo",
    "Pty",
    "Sandbox",
    "SandboxInfo",
    "ServerInfo",
    "WriteInfo",
    # errors
    "AgentUnavailable",
    "AuthenticationError",
    "BadGateway",
    "BootError",
    "CommandTimeout",
    "Conflict",
    "FileExists",
    "FileNotFound",
    "ImageBuildError",
    "ImageNotFound",
    "InvalidArgument",
    "LimitExceeded",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "ProcessNotFound",
    "SandboxNotFound",
    "SandboxNotRunning",
    "SietchError",
    "Unavailable",
    "ValidationFailed",
    "VMError",
}


def test_all_is_exactly_the_public_names() -> None:
    """sietch.__all__ lists the public names, and every one of them resolves."""
    assert set(sietch.__all__) == EXPECTED
    for name in sietch.__all__:
        assert getattr(sietch, name) is not None


def test_sdk_names_are_the_client_packages() -> None:
    """sietch.Sandbox and friends are the objects of sietch.client."""
    for name in sietch.client.__all__:
        if name in EXPECTED:
            assert getattr(sietch, name) is getattr(sietch.client, name)


def test_import_sietch_needs_only_the_stdlib() -> None:
    """The guest agent imports the package: 'import sietch' must not pull in httpx/pydantic."""
    code = "import sys, sietch; print(sorted(m for m in ('httpx', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_map_from_codes_and_statuses() -> None:
    """The SDK rebuilds the server's error classes from its JSON, falling back on the status."""
    from sietch.client._core import error_from_body

    body = b'{"error": {"code": "sandbox_not_found", "message": "gone"}}'
    assert type(error_from_body(404, body)) is sietch.SandboxNotFound
    assert type(error_from_body(429, b'{"error": {"code": "new_code", "message": "m"}}')) is (
        sietch.LimitExceeded
    )
    assert type(error_from_body(503, b"<html>proxy error</html>")) is sietch.Unavailable

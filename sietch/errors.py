"""Sietch's one exception tree.

Every layer raises these; the server maps them to JSON with their ``code`` and
``status``; the SDK maps them back from the JSON with :func:`error_for_code`::

    SietchError                      500 internal
    ├── InvalidArgument              400 invalid_argument
    │   └── ValidationFailed         422 validation_failed
    ├── AuthenticationError          401 unauthenticated
    ├── PermissionDenied             403 permission_denied
    ├── NotFound                     404 not_found
    │   ├── SandboxNotFound          404 sandbox_not_found
    │   ├── ProcessNotFound          404 process_not_found
    │   ├── FileNotFound             404 file_not_found
    │   ├── ImageNotFound            404 image_not_found
    │   └── SnapshotNotFound         404 snapshot_not_found
    ├── Conflict                     409 conflict
    │   ├── SandboxNotRunning        409 sandbox_not_running
    │   ├── FileExists               409 file_exists
    │   └── NoDesktop                409 no_desktop
    ├── PayloadTooLarge              413 payload_too_large
    ├── LimitExceeded                429 limit_exceeded
    │   └── QuotaExceeded            429 quota_exceeded
    ├── BadGateway                   502 bad_gateway
    ├── CommandTimeout               504 command_timeout
    ├── Unavailable                  503 unavailable
    │   └── AgentUnavailable         503 agent_unavailable
    └── VMError                      500 vm_error
        ├── BootError                500 boot_failed
        ├── NetworkError             500 network_error
        └── ImageBuildError          500 image_build_failed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class SietchError(Exception):
    """Root of every error Sietch raises on purpose."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidArgument(SietchError):
    code, status = "invalid_argument", 400


class ValidationFailed(InvalidArgument):
    """A request that parsed but does not fit the API's schema (wrong type, unknown field)."""

    code, status = "validation_failed", 422


class AuthenticationError(SietchError):
    code, status = "unauthenticated", 401


class PermissionDenied(SietchError):
    code, status = "permission_denied", 403


class NotFound(SietchError):
    code, status = "not_found", 404


class SandboxNotFound(NotFound):
    code = "sandbox_not_found"


class ProcessNotFound(NotFound):
    code = "process_not_found"


class FileNotFound(NotFound):
    code = "file_not_found"


class ImageNotFound(NotFound):
    code = "image_not_found"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"


class Conflict(SietchError):
    code, status = "conflict", 409


class SandboxNotRunning(Conflict):
    code = "sandbox_not_running"


class FileExists(Conflict):
    code = "file_exists"


class NoDesktop(Conflict):
    """A desktop operation on a sandbox whose image has no desktop."""

    code = "no_desktop"


class PayloadTooLarge(SietchError):
    code, status = "payload_too_large", 413


class LimitExceeded(SietchError):
    code, status = "limit_exceeded", 429


class QuotaExceeded(LimitExceeded):
    """A tenant's own quota (``sietch tenants set``), not the server's limits."""

    code = "quota_exceeded"


class BadGateway(SietchError):
    """A service in a sandbox (behind an exposed port) did not answer properly."""

    code, status = "bad_gateway", 502


class CommandTimeout(SietchError):
    code, status = "command_timeout", 504


class Unavailable(SietchError):
    code, status = "unavailable", 503


class AgentUnavailable(Unavailable):
    code = "agent_unavailable"


class VMError(SietchError):
    code, status = "vm_error", 500


class BootError(VMError):
    code = "boot_failed"


class NetworkError(VMError):
    """A sandbox's network could not be set up or changed on the host."""

    code = "network_error"


class ImageBuildError(VMError):
    code = "image_build_failed"


def _all_subclasses(cls: type[SietchError]) -> list[type[SietchError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


_BY_CODE: dict[str, type[SietchError]] = {c.code: c for c in _all_subclasses(SietchError)}

# The guest agent speaks errno-like codes; these are the ones that name a
# specific class on the host side.
_AGENT_CODES: dict[str, type[SietchError]] = {
    "not_found": FileNotFound,
    "exists": FileExists,
    "permission_denied": PermissionDenied,
    "invalid_argument": InvalidArgument,
    "is_a_directory": InvalidArgument,
    "not_a_directory": InvalidArgument,
    "not_empty": Conflict,
    "no_such_process": ProcessNotFound,
    "command_not_found": NotFound,
    "timeout": CommandTimeout,
}


def error_for_code(code: str, message: str, **details: Any) -> SietchError:
    """Rebuild the exception a peer described by its stable ``code``."""
    cls = _BY_CODE.get(code) or _AGENT_CODES.get(code) or SietchError
    err = cls(message, **details)
    if cls is SietchError and code != SietchError.code:
        err.details.setdefault("code", code)
    return err


def error_for_agent_code(code: str, message: str) -> SietchError:
    """Rebuild an error the guest agent reported.

    Its codes are errno-like and name a file problem ("not_found" is a missing
    file, not an unknown endpoint), so its own table wins over the API's.
    """
    cls = _AGENT_CODES.get(code)
    return cls(message) if cls is not None else error_for_code(code, message)


def describe_validation(errors: Iterable[Mapping[str, Any]], limit: int = 5) -> str:
    """One line for a person from pydantic's ``ValidationError.errors()``.

    ``field.sub: message`` per error (FastAPI's leading ``body`` dropped, pydantic's
    ``Value error, `` prefix too), the first ``limit`` of them. It takes the plain
    error dicts, so this module stays free of pydantic (the guest agent imports it).
    """
    errors = list(errors)
    parts = []
    for error in errors[:limit]:
        where = ".".join(str(x) for x in error.get("loc", ()) if x != "body")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more

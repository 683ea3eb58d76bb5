"""The errors operations report to the host, with their stable codes."""

from __future__ import annotations

import errno
from typing import Any, TypeVar

T = TypeVar("T")

CODES = frozenset(
    {
        "not_found",
        "exists",
        "permission_denied",
        "invalid_argument",
        "is_a_directory",
        "not_a_directory",
        "not_empty",
        "no_such_process",
        "command_not_found",
        "timeout",
        "internal",
    }
)

_ERRNO_CODES = {
    errno.ENOENT: "not_found",
    errno.EEXIST: "exists",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EROFS: "permission_denied",
    errno.EISDIR: "is_a_directory",
    errno.ENOTDIR: "not_a_directory",
    errno.ENOTEMPTY: "not_empty",
    errno.ESRCH: "no_such_process",
    errno.EINVAL: "invalid_argument",
    errno.ENAMETOOLONG: "invalid_argument",
    errno.ELOOP: "invalid_argument",
}


class OpError(Exception):
    """An operation failed in a way the host should see as ``{"type": "error"}``."""

    def __init__(self, code: str, message: str) -> None:
        assert code in CODES, code
        super().__init__(message)
        self.code = code
        self.message = message


def from_os_error(exc: OSError, what: str) -> OpError:
    """Translate an OSError so the message names the path or command it concerns."""
    code = _ERRNO_CODES.get(exc.errno or 0, "internal")
    reason = exc.strerror or str(exc)
    return OpError(code, f"{what}: {reason}")


def _bad(key: str, what: str) -> OpError:
    return OpError("invalid_argument", f"argument {key!r} must be {what}")


def arg_str(args: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = args.get(key, default)
    if value is not None and not isinstance(value, str):
        raise _bad(key, "a string")
    return value


def arg_int(args: dict[str, Any], key: str, default: int | None = None) -> int | None:
    # JSON true must not pass as 1: bool is an int subclass in Python.
    value = args.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _bad(key, "an integer")
    return value


def arg_float(args: dict[str, Any], key: str, default: float | None = None) -> float | None:
    value = args.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, "a number")
    return float(value)


def arg_bool(args: dict[str, Any], key: str, default: bool) -> bool:
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(key, "true or false")
    return value


def need(value: T | None, key: str) -> T:
    """Turn a missing mandatory argument into invalid_argument rather than a crash."""
    if value is None:
        raise OpError("invalid_argument", f"missing argument {key!r}")
    return value

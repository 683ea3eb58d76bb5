"""Who may use ``/v1``: the holders of a Sietch API key, as for the rest of the API.

Arrakis had no authentication at all. ``py-arrakis`` sends no headers of its
own, but it builds every request with ``requests`` from the base URL it is
given, and ``requests`` turns credentials in a URL into HTTP Basic auth. So
``/v1`` accepts the key either as ``Authorization: Bearer <key>`` or as the
Basic password (any user name): ``SandboxManager("http://arrakis:<key>@host:7000")``
works unchanged. With auth switched off (only allowed on loopback) it is open,
as Arrakis was.
"""

from __future__ import annotations

import base64
import binascii

from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from sietch.core.tenants import Caller
from sietch.server.auth import resolve


def key_from_headers(conn: HTTPConnection) -> str | None:
    """The API key a request carries as a Bearer token or a Basic password."""
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def authenticate(conn: HTTPConnection) -> Caller:
    """The caller of the key (any, with auth off); :class:`AuthenticationError` otherwise."""
    return resolve(
        conn,
        key_from_headers(conn),
        "missing API key: send 'Authorization: Bearer <key>', or put the key in the URL "
        "(http://arrakis:<key>@host:port) for py-arrakis",
    )


class ArrakisAuth(HTTPBearer):
    """Declared as HTTPBearer so /docs offers it; Basic is accepted too (see module doc)."""

    async def __call__(self, conn: HTTPConnection) -> Caller:  # type: ignore[override]
        return authenticate(conn)


require_key = ArrakisAuth(
    auto_error=False,
    scheme_name="ArrakisKey",
    description="A Sietch API key, as Bearer token or as the password of Basic auth.",
)

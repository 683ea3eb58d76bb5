"""Who a request comes from: its API key resolved to a :class:`Caller` (tenant, key, admin).

The keys live in the tenants catalog (:mod:`sietch.core.tenants`), checked on
every request, so ``sietch keys revoke`` takes effect at once. The caller is
kept in the connection's scope for the routes (:data:`CALLER`).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from sietch.cluster.wire import CALLER_HEADER, decode_caller
from sietch.core.tenants import ANONYMOUS, Caller
from sietch.errors import AuthenticationError
from sietch.server.state import ServerState

CALLER = "sietch.caller"
"""Scope key of the connection's :class:`Caller` once authenticated."""


def bearer_key(conn: HTTPConnection) -> str | None:
    scheme, _, key = conn.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def resolve(conn: HTTPConnection, key: str | None, missing: str) -> Caller:
    """The caller ``key`` stands for (anyone, with auth off); AuthenticationError if none.

    ``missing`` is the message for a request without a key: it says how to send one.
    """
    known: Caller | None = conn.scope.get(CALLER)
    if known is not None:
        return known
    state: ServerState = conn.app.state.sietch
    if not state.auth:
        caller = ANONYMOUS
    elif state.gateway_callers:
        # A cluster node: the secret was checked (sietch.server.node); API keys mean nothing.
        vouched = conn.headers.get(CALLER_HEADER)
        found = decode_caller(vouched) if vouched else None
        if found is None:
            raise AuthenticationError(missing)
        caller = found
    elif key is None:
        raise AuthenticationError(missing)
    else:
        found = state.tenants.lookup(key)
        if found is None:
            raise AuthenticationError("invalid API key")
        caller = found
    conn.scope[CALLER] = caller
    return caller

"""Where a proxied request goes: the guest service's URL and the headers sent along."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from sietch.core.models import PortMapping

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers (RFC 9110 7.6.1) that belong to one connection, not to the message."""
HOST_ROUTED = "sietch.host_routed"
"""Scope key set by :class:`~.host_routes.HostRoutes`: the guest sees the request at its root."""
HOST_TARGET = "sietch.host_target"
"""Scope key set by :class:`~.host_routes.HostRoutes`: (guest port, sandbox id) of the host."""
IDE_HOST = "ide"
"""``ide-{sandbox id}.{proxy domain}``: the sandbox's IDE on an origin of its own."""
IDE_ROUTE, IDE_WS_ROUTE = "ide_proxy", "ide_proxy_ws"
"""The IDE's routes' names (:mod:`sietch.server.routes.ide`), for ``url_path_for``."""
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"authorization"}


def origin(mapping: PortMapping, scheme: str) -> str:
    """``scheme://host:port`` of an exposed port."""
    return f"{scheme}://{mapping.host}:{mapping.host_port}"


def upstream(
    conn: HTTPConnection,
    base: str,
    *,
    marker: bytes = b"/proxy/",
) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The URL under ``base`` for this request's raw path after ``marker`` (and its query),
    and the headers to send.

    The client's headers go along but for the hop-by-hop ones, its Host and its
    API key; ``X-Forwarded-*`` say where the request came from.
    """
    raw_path: bytes = conn.scope.get("raw_path") or conn.url.path.encode()
    cut = raw_path.index(marker) + len(marker)
    tail = raw_path[cut:].decode("ascii", "replace")
    query = conn.scope.get("query_string", b"").decode("ascii", "replace")
    url = f"{base}/{tail}" + (f"?{query}" if query else "")
    headers = [(k, v) for k, v in conn.headers.raw if k.lower() not in _NOT_FORWARDED]
    headers += [
        (b"x-forwarded-for", (conn.client.host if conn.client else "").encode()),
        (b"x-forwarded-proto", conn.url.scheme.encode()),
        (b"x-forwarded-host", conn.headers.get("host", "").encode()),
    ]
    if not conn.scope.get(HOST_ROUTED):
        headers.append((b"x-forwarded-prefix", raw_path[: cut - 1]))
    return url, headers

"""``{port}-{sandbox id}.{proxy domain}`` served as the port proxy, whatever its path.

With ``SIETCH_PROXY_DOMAIN`` set, a web app that uses absolute paths
(``/static/app.js``) works as it would at its own root.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from sietch.server.routes.proxy import http_proxy, ws_relay
from sietch.server.routes.proxy.upstream import HOST_ROUTED, HOST_TARGET


class HostRoutes:
    """Re-address a request for ``{port}-{sandbox id}.{domain}`` to the port proxy.

    Pure ASGI: the request is re-addressed to the proxy route (HTTP or WebSocket)
    and goes through the app as any API request, so the API key, the error
    bodies, the logs and the metrics are the proxy's own. Any other host is left alone.
    """

    def __init__(self, app: ASGIApp, domain: str) -> None:
        self.app = app
        domain = re.escape(domain.strip(".").lower())
        # A trailing dot (a fully qualified name) and the server's own :port may follow.
        self._host = re.compile(rf"(\d{{1,5}})-(sb-[0-9a-z]+)\.{domain}\.?(?::\d+)?", re.ASCII)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (found := self._target(scope)):
            port, sandbox_id = found
            name = http_proxy.ROUTE if scope["type"] == "http" else ws_relay.ROUTE
            # "/api/v1/sandboxes/{id}/ports/{port}/proxy/", from the router: no prefix copied here.
            prefix = scope["app"].url_path_for(name, sandbox_id=sandbox_id, port=port, path="")
            prefix = prefix.rstrip("/")
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            scope = {
                **scope,
                "path": prefix + scope["path"],
                "raw_path": prefix.encode() + raw_path,
                HOST_ROUTED: True,
                HOST_TARGET: (int(port), sandbox_id),
            }
        await self.app(scope, receive, send)

    def _target(self, scope: Scope) -> tuple[str, str] | None:
        """The guest port and sandbox id the Host header names, if it names one."""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                found = self._host.fullmatch(value.decode("latin-1").lower())
                return (found[1], found[2]) if found else None
        return None

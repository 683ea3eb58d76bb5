"""``{port}-{sandbox id}.{proxy domain}`` served as the port proxy, whatever its path, and
``ide-{sandbox id}.{proxy domain}`` as the sandbox's IDE.

With ``SIETCH_PROXY_DOMAIN`` set, a web app that uses absolute paths
(``/static/app.js``) works as it would at its own root. The IDE gets a host of its
own for its origin: code-server runs the sandbox's code and extensions, and on the
API's origin its pages could script the web console and the desktop viewer.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from sietch.server.browser_auth import VISIBLE_PATH
from sietch.server.routes.proxy import http_proxy, ws_relay
from sietch.server.routes.proxy.upstream import (
    HOST_ROUTED,
    HOST_TARGET,
    IDE_HOST,
    IDE_ROUTE,
    IDE_WS_ROUTE,
)


class HostRoutes:
    """Re-address a request for ``{port}-{sandbox id}.{domain}`` to the port proxy, and one
    for ``ide-{sandbox id}.{domain}`` to the IDE's routes.

    Pure ASGI: the request is re-addressed to the proxy route (HTTP or WebSocket)
    and goes through the app as any API request, so the API key, the error
    bodies, the logs and the metrics are the proxy's own. Any other host is left alone.
    """

    def __init__(self, app: ASGIApp, domain: str) -> None:
        self.app = app
        domain = re.escape(domain.strip(".").lower())
        # A trailing dot (a fully qualified name) and the server's own :port may follow.
        self._host = re.compile(
            rf"(\d{{1,5}}|{IDE_HOST})-(sb-[0-9a-z]+)\.{domain}\.?(?::\d+)?", re.ASCII
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and (found := self._target(scope)):
            port, sandbox_id = found
            http = scope["type"] == "http"
            # The route's prefix, from the router: no path copied here.
            if port == IDE_HOST:
                name = IDE_ROUTE if http else IDE_WS_ROUTE
                prefix = scope["app"].url_path_for(name, sandbox_id=sandbox_id, path="")
                target = {VISIBLE_PATH: scope["path"]}
            else:
                name = http_proxy.ROUTE if http else ws_relay.ROUTE
                prefix = scope["app"].url_path_for(name, sandbox_id=sandbox_id, port=port, path="")
                target = {HOST_TARGET: (int(port), sandbox_id)}
            prefix = prefix.rstrip("/")
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
            scope = {
                **scope,
                "path": prefix + scope["path"],
                "raw_path": prefix.encode() + raw_path,
                HOST_ROUTED: True,
                **target,
            }
        await self.app(scope, receive, send)

    def _target(self, scope: Scope) -> tuple[str, str] | None:
        """The guest port and sandbox id the Host header names, if it names one."""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                found = self._host.fullmatch(value.decode("latin-1").lower())
                return (found[1], found[2]) if found else None
        return None

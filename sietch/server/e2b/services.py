"""Ports of an E2B sandbox that its image's own services listen on: the code interpreter's
gateway, which e2b-code-interpreter reaches on port 49999 (``JUPYTER_PORT``).

:class:`.routing.SandboxTraffic` sends the SDK's requests for such a port here rather than
to the port proxy, and they reach the guest through the sandbox's unix socket for the port
(as the desktop viewer and the IDE do): the port is the image's, not the user's, so it does
not show among the sandbox's exposed ports unless the user exposes it. Each request carries
the sandbox's access token (``X-Access-Token`` or ``E2B-Traffic-Access-Token``).
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sietch.errors import AuthenticationError, NotFound
from sietch.images import interpreter
from sietch.server.deps import ManagerDep, StateDep
from sietch.server.e2b.access import access_token
from sietch.server.routes.proxy import http_proxy
from sietch.server.routes.proxy.upstream import upstream
from sietch.server.state import ServerState

SERVICE_PORTS = frozenset({interpreter.PORT})
PREFIX = "/e2b/service"
TOKEN_HEADERS = ("x-access-token", "e2b-traffic-access-token")
_BASE = "http://service"
"""Where the service is, behind the unix socket (the host name is not looked at)."""

router = APIRouter(prefix=PREFIX, tags=["e2b-envd"], include_in_schema=False)


def prefix(sandbox_id: str, port: int) -> str:
    """The path in front of a request to a service port of the sandbox."""
    return f"{PREFIX}/{quote(sandbox_id, safe='')}/{port}"


def has_token(request: Request, state: ServerState, sandbox_id: str) -> bool:
    wanted = access_token(state, sandbox_id)
    return any(
        hmac.compare_digest(given, wanted)
        for name in TOKEN_HEADERS
        if (given := request.headers.get(name)) is not None
    )


@router.api_route(
    "/{sandbox_id}/{port}/{path:path}",
    methods=http_proxy.METHODS,
    name="e2b-service",
    response_model=None,
)
async def service(
    sandbox_id: str, port: int, path: str, request: Request, *, manager: ManagerDep, state: StateDep
) -> Response:
    """Forward the request to the service on the port, through the sandbox's unix socket."""
    del path  # the raw (still percent-encoded) path is forwarded
    if port not in SERVICE_PORTS:
        raise NotFound(f"port {port} is no service port of Sietch's images", port=port)
    if not has_token(request, state, sandbox_id):
        raise AuthenticationError("missing or invalid access token for this sandbox")
    socket = await manager.service_socket(sandbox_id, port)
    url, headers = upstream(request, _BASE, marker=prefix(sandbox_id, port).encode() + b"/")
    return await http_proxy.forward(
        request,
        await state.service_client(socket),
        url,
        headers,
        lease=manager.activity.lease(sandbox_id),
        what=f"port {port} of sandbox {sandbox_id}",
        port=port,
    )

"""Ports: expose a guest TCP port on the host's loopback, list, unexpose, and proxy HTTP to it.

The proxy lets a user who can reach only the API port (same API key) talk to
a web server in a sandbox: ``/api/v1/sandboxes/{id}/ports/{port}/proxy/{path}``
is forwarded, streamed both ways, to the exposed port's 127.0.0.1 address.
The API key is not passed on to the guest.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from sietch.errors import BadGateway
from sietch.manager.models import PortMapping
from sietch.server.deps import ManagerDep, StateDep
from sietch.server.schemas import PortCreate, PortPublic, PortsPublic

router = APIRouter(prefix="/sandboxes", tags=["ports"])

GuestPort = Annotated[int, Path(description="The guest TCP port, 1 to 65535.")]

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the message.
_HOP = {
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
_NOT_FORWARDED = _HOP | {b"host", b"authorization"}
PROXY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def port_public(mapping: PortMapping) -> PortPublic:
    return PortPublic.model_validate(mapping.model_dump())


@router.post(
    "/{sandbox_id}/ports",
    name="expose",
    status_code=status.HTTP_201_CREATED,
    response_model=PortPublic,
)
async def expose_port(sandbox_id: str, body: PortCreate, manager: ManagerDep) -> PortPublic:
    """Reach a guest TCP port on 127.0.0.1:host_port; exposing it again returns the same."""
    return port_public(await manager.expose(sandbox_id, body.port))


@router.get("/{sandbox_id}/ports", name="list", response_model=PortsPublic)
async def list_ports(sandbox_id: str, manager: ManagerDep) -> PortsPublic:
    """The sandbox's exposed ports."""
    mappings = await manager.ports(sandbox_id)
    return PortsPublic(data=[port_public(m) for m in mappings], count=len(mappings))


@router.delete(
    "/{sandbox_id}/ports/{port}", name="unexpose", status_code=status.HTTP_204_NO_CONTENT
)
async def unexpose_port(sandbox_id: str, port: GuestPort, manager: ManagerDep) -> Response:
    """Close the port's host address (404 if it was not exposed)."""
    await manager.unexpose(sandbox_id, port)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.api_route(
    "/{sandbox_id}/ports/{port}/proxy/{path:path}",
    methods=PROXY_METHODS,
    name="proxy",
    response_class=StreamingResponse,
    responses={502: {"description": "Nothing in the sandbox answered on that port."}},
)
async def proxy(
    sandbox_id: str,
    port: GuestPort,
    path: str,
    request: Request,
    *,
    manager: ManagerDep,
    state: StateDep,
) -> StreamingResponse:
    """Forward an HTTP request to an exposed port of the sandbox and stream its answer back."""
    del path  # the raw (still percent-encoded) path is forwarded instead
    mapping = manager.port(sandbox_id, port)
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    marker = b"/proxy/"
    tail = raw_path[raw_path.index(marker) + len(marker) :].decode("ascii", "replace")
    query = request.scope.get("query_string", b"").decode("ascii", "replace")
    url = f"http://{mapping.host}:{mapping.host_port}/{tail}" + (f"?{query}" if query else "")
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _NOT_FORWARDED]
    prefix = raw_path[: raw_path.index(marker) + len(marker) - 1].decode("ascii", "replace")
    client_host = request.client.host if request.client else ""
    headers += [
        (b"x-forwarded-for", client_host.encode()),
        (b"x-forwarded-proto", request.url.scheme.encode()),
        (b"x-forwarded-host", request.headers.get("host", "").encode()),
        (b"x-forwarded-prefix", prefix.encode()),
    ]
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    client = state.proxy_client()
    upstream = client.build_request(
        request.method, url, headers=headers, content=request.stream() if has_body else None
    )
    try:
        response = await client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        raise BadGateway(
            f"nothing answered HTTP on port {port} of sandbox {sandbox_id}: "
            f"{type(exc).__name__}: {exc}",
            port=port,
        ) from None
    answer = StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        background=BackgroundTask(response.aclose),
    )
    answer.raw_headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP]
    return answer

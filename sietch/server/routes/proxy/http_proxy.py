"""Forward an HTTP request to an exposed guest port and stream its answer back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from sietch.core.lifecycle import Lease
from sietch.errors import BadGateway
from sietch.server.deps import ManagerDep, StateDep
from sietch.server.routes.ports import GuestPort
from sietch.server.routes.proxy.upstream import HOP_BY_HOP, origin, upstream

router = APIRouter(prefix="/sandboxes", tags=["ports"])
ROUTE = "proxy"
"""The route's name, for ``url_path_for``."""
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.api_route(
    "/{sandbox_id}/ports/{port}/proxy/{path:path}",
    methods=METHODS,
    name=ROUTE,
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
    """Forward an HTTP request to an exposed port of the sandbox and stream its answer back.

    A paused or hibernated sandbox is woken first (``auto_resume``); it counts as busy
    until the answer has been sent."""
    del path  # the raw (still percent-encoded) path is forwarded instead
    await manager.awake(sandbox_id)
    url, headers = upstream(request, origin(manager.port(sandbox_id, port), "http"))
    return await forward(
        request,
        state.proxy_client(),
        url,
        headers,
        lease=manager.activity.lease(sandbox_id),
        what=f"port {port} of sandbox {sandbox_id}",
        port=port,
    )


async def forward(
    request: Request,
    client: httpx.AsyncClient,
    url: str,
    headers: list[tuple[bytes, bytes]],
    *,
    lease: Lease,
    what: str,
    port: int,
) -> StreamingResponse:
    """Send the request (its body streamed) to ``url``, and stream the answer back
    (502 naming ``what`` when nothing answers). ``lease`` keeps the sandbox busy until
    the answer has been sent, and is released whatever happens."""
    try:
        return _streamed(await _send(request, client, url, headers, what=what, port=port), lease)
    except BaseException:
        lease.release()
        raise


async def _send(
    request: Request,
    client: httpx.AsyncClient,
    url: str,
    headers: list[tuple[bytes, bytes]],
    *,
    what: str,
    port: int,
) -> httpx.Response:
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    outgoing = client.build_request(
        request.method, url, headers=headers, content=request.stream() if has_body else None
    )
    try:
        response = await client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        raise BadGateway(
            f"nothing answered HTTP on {what}: {type(exc).__name__}: {exc}", port=port
        ) from None
    return response


def _streamed(response: httpx.Response, lease: Lease) -> StreamingResponse:
    """The guest's answer as it comes, with its own status and end-to-end headers."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:  # also when the client went away mid-answer: free the pooled connection
            await response.aclose()
            lease.release()

    async def done() -> None:
        await response.aclose()
        lease.release()

    answer = StreamingResponse(
        body(), status_code=response.status_code, background=BackgroundTask(done)
    )
    answer.raw_headers = [
        (k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP
    ]
    return answer

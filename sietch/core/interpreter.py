"""Code in a sandbox's Jupyter kernel: a client of the code-interpreter image's gateway
(:mod:`sietch.images.interpreter`) on its guest port, for Sietch's own API and MCP tools,
reached through the sandbox's unix socket for it (the port is not exposed by this).

The gateway answers one JSON object a line (``stdout``, ``stderr``, ``result``, ``error``,
``number_of_executions``, ``end_of_execution``; the e2b-code-interpreter SDK's format);
:func:`run_code` hands them on as they come, and ends with ``end_of_execution`` even when
the cell ran out of time (an ``error`` named ``TimeoutError`` before it: the gateway
interrupts the cell once its client is gone).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from sietch.core.kernel_gateway import BASE
from sietch.core.manager import Manager
from sietch.errors import BadGateway, Conflict, InvalidArgument, NotFound, Unavailable
from sietch.images.interpreter import PORT

DEFAULT_TIMEOUT_S = 300.0
END = {"type": "end_of_execution"}
Clients = Callable[[Path], Awaitable[httpx.AsyncClient]]
"""The HTTP client for a unix socket (the server's pooled ones)."""


def _no_gateway(sandbox_id: str) -> Conflict:
    # Not a 502: the sandbox is fine, it is of an image without the gateway.
    return Conflict(
        f"nothing answers on the code interpreter's port {PORT} of sandbox {sandbox_id}: "
        "create it from the 'code-interpreter' image (or one built on it)"
    )


async def run_code(
    manager: Manager,
    clients: Clients,
    sandbox_id: str,
    code: str,
    *,
    context_id: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[dict[str, Any]]:
    """Run ``code`` in the sandbox's default kernel (or context ``context_id``), yielding
    the gateway's lines; the sandbox is woken first and stays busy meanwhile."""
    client = await clients(await manager.service_socket(sandbox_id, PORT))
    url = f"{BASE}/execute"
    body = {"code": code, "context_id": context_id, "env_vars": dict(env) if env else None}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    started = False
    with manager.activity.busy(sandbox_id):
        try:
            async with client.stream("POST", url, json=body) as response:
                if response.is_error:
                    await response.aread()
                    raise _refused(response)
                lines = response.aiter_lines()
                while True:
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    try:
                        line = await asyncio.wait_for(anext(lines), left)
                    except StopAsyncIteration:
                        break
                    if line.strip():
                        out = json.loads(line)
                        started = True
                        yield out
                        if out == END:
                            return
        except TimeoutError:  # the response is closed by now: the gateway interrupts the cell
            yield _error("TimeoutError", f"the code ran longer than its timeout ({timeout_s:g} s)")
            yield END
            return
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            if not started:
                raise _no_gateway(sandbox_id) from exc
    # The gateway went away mid-cell (its kernel killed, say): say so, and end.
    yield _error("GatewayError", "the code interpreter closed the stream before the end")
    yield END


def _error(name: str, value: str) -> dict[str, Any]:
    return {"type": "error", "name": name, "value": value, "traceback": ""}


def _refused(response: httpx.Response) -> Exception:
    if response.status_code == 404:
        return NotFound(response.text)
    if response.status_code == 400:
        return InvalidArgument(response.text)
    if response.status_code == 503:
        return Unavailable(f"the code interpreter is not ready yet: {response.text}")
    return BadGateway(f"the code interpreter answered {response.status_code}: {response.text}")

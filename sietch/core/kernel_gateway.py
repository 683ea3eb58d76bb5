"""The code-interpreter image's kernel gateway (:mod:`sietch.images.interpreter`) as Sietch
itself reaches it: through a unix socket of the sandbox (``LiveSandbox.service_socket``),
so its port never shows among the sandbox's exposed ports.

Two things only Sietch asks of it, both on sandboxes whose image has the gateway:

- :func:`warm`: the warm pool runs one cell in a sandbox just restored from the template,
  so the first cell of the user's finds the gateway's and the kernel's code translated
  (under TCG a new QEMU process translates every code path afresh: the first ``1+1`` took
  seconds); the gateway then puts the kernel back to a fresh namespace and execution count.
- :func:`hand_env`: the variables a sandbox is created with, in every kernel's
  ``os.environ``, as every command gets them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from sietch.core.live import LiveSandbox
from sietch.errors import BadGateway, FileNotFound
from sietch.images.interpreter import GATEWAY, PORT

BASE = "http://gateway"
"""The gateway behind the unix socket (the host name is not looked at)."""
WARM_CODE = "print('warm', end=''); 1 + 1"
"""A cell with printed output and a value: the paths of the first cells users run."""
TIMEOUT_S = 600.0
"""Seconds a warm-up cell or an environment change may take: a new QEMU process's first
cell, translated afresh, on a loaded host."""


async def present(sandbox: LiveSandbox) -> bool:
    """Whether the sandbox's image has the gateway (one ``stat`` in the guest)."""
    try:
        await sandbox.stat(GATEWAY)
    except FileNotFound:
        return False
    return True


@asynccontextmanager
async def _client(sandbox: LiveSandbox) -> AsyncIterator[httpx.AsyncClient]:
    socket = await sandbox.service_socket(PORT)
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE, timeout=TIMEOUT_S, trust_env=False
    ) as client:
        yield client


async def _post(sandbox: LiveSandbox, path: str, body: dict[str, Any], what: str) -> str:
    try:
        async with _client(sandbox) as client:
            response = await client.post(path, json=body)
    except httpx.HTTPError as exc:
        raise BadGateway(
            f"the code interpreter of sandbox {sandbox.id} did not answer {what}: {exc!r}",
            port=PORT,
        ) from exc
    if response.is_error:
        raise BadGateway(
            f"the code interpreter of sandbox {sandbox.id} refused {what}: "
            f"{response.status_code} {response.text}",
            port=PORT,
        )
    return response.text


async def warm(sandbox: LiveSandbox) -> None:
    """Run :data:`WARM_CODE` in the default kernel, which then is as fresh as before."""
    lines = await _post(sandbox, "/execute", {"code": WARM_CODE, "warm": True}, "a warm-up")
    for line in lines.splitlines():
        out = json.loads(line) if line.strip() else {}
        if out.get("type") == "error":
            raise BadGateway(
                f"the warm-up cell failed in sandbox {sandbox.id}: "
                f"{out.get('name')}: {out.get('value')}",
                port=PORT,
            )


async def hand_env(sandbox: LiveSandbox, env: dict[str, str]) -> None:
    """Set ``env`` in the kernels of a sandbox whose image has the gateway."""
    if env and await present(sandbox):
        await _post(sandbox, "/env", {"env": env}, "the environment")
